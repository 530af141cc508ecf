"""Where training runs: the device, the fast-math settings that are safe for it, and training
images kept on that device so that a GPU never waits for a data loader.

- ``pick(name)``: ``cuda``, ``cpu`` or ``auto`` (cuda when there is one). Asking for cuda on a
  machine without one is a clear usage error, not a traceback.
- ``configure(device)``: TF32 matmuls and convolutions on CUDA (10 mantissa bits are plenty for
  gradient descent; the codec's decoder never runs with them, see ``codec.pipeline``).
- ``autocast(device, enabled)``: bfloat16 autocast for the convolutional transforms on CUDA;
  entropy models stay float32 (their likelihoods are CDF differences that bf16 would round).
- ``ImageBank``: every training image as one uint8 tensor on the device; a batch of random
  crops is slicing and a cast there, drawn from a numpy generator seeded per step (so a resumed
  run draws the same crops on any device).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from archiver.errors import UsageError


def pick(name: str | torch.device | None = "auto") -> torch.device:
    name = str(name or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible to torch on this machine (use --device cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UsageError(f"unknown device {name!r} (cpu, cuda, cuda:N or auto)")
    return torch.device(name)


def configure(device: torch.device) -> dict:
    """Safe speed-ups for ``device``; returns what was set (for the training log)."""
    if device.type != "cuda":
        return {"device": str(device), "tf32": False}
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # fixed crop sizes: pick the fastest kernels once
    return {"device": str(device), "tf32": True, "gpu": torch.cuda.get_device_name(device)}


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16 autocast on CUDA (no loss scaling needed); nothing on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class ImageBank:
    """Training images (HxWx3 uint8 arrays) as tensors on ``device``, served as random crops."""

    def __init__(self, images: Sequence[np.ndarray], device: torch.device):
        self.device = device
        self.images = [torch.from_numpy(np.array(a, copy=True)).to(device) for a in images]
        self.sizes = [tuple(a.shape[:2]) for a in images]

    def __len__(self) -> int:
        return len(self.images)

    def crops(self, n: int, size: int, gen: np.random.Generator, augment: bool = True) -> torch.Tensor:
        """``n`` random ``size`` crops in [-1, 1], (n, 3, size, size), with random flips and
        90-degree turns when ``augment``. Images smaller than ``size`` are never drawn."""
        usable = [i for i, (h, w) in enumerate(self.sizes) if h >= size and w >= size]
        if not usable:
            raise UsageError(f"no training image is at least {size} px on each side")
        out = []
        for _ in range(n):
            k = usable[int(gen.integers(len(usable)))]
            h, w = self.sizes[k]
            y, x = int(gen.integers(h - size + 1)), int(gen.integers(w - size + 1))
            c = self.images[k][y:y + size, x:x + size]
            if augment and gen.random() < 0.5:
                c = c.flip(1)
            if augment and gen.random() < 0.5:
                c = c.transpose(0, 1)
            out.append(c)
        batch = torch.stack(out).permute(0, 3, 1, 2)
        return batch.float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)
