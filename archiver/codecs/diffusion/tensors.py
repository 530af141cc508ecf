"""Pixels <-> tensors, and the fixed way torch runs for the codec (same bytes -> same pixels).

Shared by the encoder, the decoder and the timestep search, which must all convert and run
exactly alike.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...errors import UsageError

# deterministic cuBLAS needs this before the first CUDA call (harmless on CPU)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def to_tensor(rgb: Image.Image) -> torch.Tensor:
    """An RGB image as a (1, 3, H, W) tensor in [-1, 1]."""
    a = np.asarray(rgb.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1)[None] / 127.5 - 1.0


def pad_to(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Pad right/bottom to a multiple of the autoencoder's stride (the header keeps the true size)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if not (ph or pw):
        return x
    # reflection keeps edge statistics natural; it needs the pad smaller than the image
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def to_image(x: torch.Tensor, width: int, height: int) -> Image.Image:
    """The top-left ``width`` x ``height`` of a [-1, 1] tensor as an 8-bit RGB image."""
    x = x[0, :, :height, :width].float().clamp(-1, 1)
    a = torch.round((x + 1.0) * 127.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def codec_threads() -> int:
    """CPU threads the codec always runs with. CPU kernels split their sums by thread count, so
    1 and 2 threads give pixels up to 2 levels apart: a fixed count keeps "same bytes -> same
    pixels" true whatever the caller set (``ARCHIVER_CODEC_THREADS``; encode and verify must agree)."""
    try:
        return max(1, int(os.environ.get("ARCHIVER_CODEC_THREADS", "4")))
    except ValueError:
        raise UsageError("ARCHIVER_CODEC_THREADS must be a positive integer") from None


def _use_deterministic(mode: bool, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms`` for eager kernels. The public call also sets the
    switch for ``torch.compile``d code, and to reach it imports ``torch._inductor`` and with it
    ``torch._dynamo``: ~1.5 CPU-seconds of every decode's start-up, for code archiver never
    compiles. The eager switch is the same either way; once inductor is loaded, the public call."""
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


_state_lock = threading.Lock()
_state_depth = 0
_state_saved: tuple = ()


@contextmanager
def deterministic():
    """Same bytes -> same pixels: deterministic kernels and a fixed CPU thread count.

    Those switches are the process's, not a thread's: with several threads inside (the batched
    path's workers and its batcher), the first one in sets them and the last one out restores
    them, so that no thread's exit changes the thread count under another's model call."""
    global _state_depth, _state_saved
    with _state_lock:
        if _state_depth == 0:
            _state_saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
                            torch.get_num_threads())
            _use_deterministic(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            torch.set_num_threads(codec_threads())
        _state_depth += 1
    try:
        with torch.no_grad():
            yield
    finally:
        with _state_lock:
            _state_depth -= 1
            if _state_depth == 0:
                prev, prev_bench, prev_threads = _state_saved
                _use_deterministic(prev)
                torch.backends.cudnn.benchmark = prev_bench
                torch.set_num_threads(prev_threads)
