"""Timing, peak memory, and the network-based metrics (LPIPS, FID) that are only computed when
their weights are already on this machine: the benchmark never downloads anything."""

from __future__ import annotations

import math
import os
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

MEMORY_METHOD = (
    "peak resident set size (RSS) above the RSS just before the call, sampled every 2 ms from "
    "/proc/self/statm in a background thread (covers torch and C allocations, unlike tracemalloc)"
)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: maxrss is a lifetime peak, so deltas are only a lower bound
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Measured:
    value: Any
    seconds: float
    peak_mib: float


def measure(fn: Callable[[], Any], interval: float = 0.002) -> Measured:
    """Run ``fn`` once; wall seconds and peak RSS growth (MiB) while it ran."""
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            r = _rss_bytes()
            if r > peak[0]:
                peak[0] = r
            stop.wait(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    try:
        value = fn()
    finally:
        dt = time.perf_counter() - t0
        stop.set()
        th.join()
    peak[0] = max(peak[0], _rss_bytes())
    return Measured(value, dt, (peak[0] - base) / 2**20)


def _hub_checkpoints() -> Path:
    import torch  # heavy: torch, optional and slow to import

    return Path(torch.hub.get_dir()) / "checkpoints"


def _to_tensor(img) -> "Any":
    import torch  # heavy: torch, optional and slow to import

    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1)[None]


class Lpips:
    """LPIPS (AlexNet, v0.1) from the ``lpips`` package, whose linear heads ship inside it, with
    the AlexNet ImageNet weights read from a local file: ``$ARCHIVER_LPIPS_ALEXNET`` or the torch
    hub cache. ``Lpips.load()`` returns (model or None, reason)."""

    ALEXNET_FILE = "alexnet-owt-7be5be79.pth"

    def __init__(self, model):
        self.model = model

    @classmethod
    def weights_path(cls) -> Path:
        env = os.environ.get("ARCHIVER_LPIPS_ALEXNET")
        return Path(env) if env else _hub_checkpoints() / cls.ALEXNET_FILE

    @classmethod
    def load(cls) -> tuple["Lpips | None", str]:
        path = cls.weights_path()
        try:
            import lpips  # heavy: lpips (torch), optional
        except ImportError:
            return None, f"not computed (the lpips package is not installed; AlexNet weights would be read from {path})"
        if not path.is_file():
            return None, (f"not computed (weights not available locally: {path} is absent; "
                          "set ARCHIVER_LPIPS_ALEXNET to a torchvision AlexNet checkpoint)")
        import torch  # heavy: torch, optional and slow to import

        try:
            model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
            feats = torch.load(path, map_location="cpu", weights_only=True)
            state = {}
            for key in model.net.state_dict():  # "slice2.3.weight" -> "features.3.weight"
                _, idx, kind = key.split(".")
                state[key] = feats[f"features.{idx}.{kind}"]
            model.net.load_state_dict(state)
        except Exception as e:  # a damaged or foreign file: say so, don't crash the benchmark
            return None, f"not computed (could not load LPIPS weights from {path}: {e})"
        model.eval()
        return cls(model), f"computed (lpips {getattr(lpips, '__version__', '?')}, AlexNet weights {path})"

    def __call__(self, a, b) -> float:
        import torch  # heavy: torch, optional and slow to import

        with torch.no_grad():
            return float(self.model(_to_tensor(a), _to_tensor(b)).mean())


class Fid:
    """Patch FID (256x256 non-overlapping patches, as in the diffusion-codec literature) with the
    pytorch-fid Inception weights, only when that file is already local (``$ARCHIVER_FID_WEIGHTS``
    or the torch hub cache). On a couple of dozen images it is a rough indicator at best."""

    WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
    PATCH = 256

    def __init__(self, model):
        self.model = model

    @classmethod
    def weights_path(cls) -> Path:
        env = os.environ.get("ARCHIVER_FID_WEIGHTS")
        return Path(env) if env else _hub_checkpoints() / cls.WEIGHTS_FILE

    @classmethod
    def load(cls) -> tuple["Fid | None", str]:
        path = cls.weights_path()
        try:
            from pytorch_fid.inception import InceptionV3  # heavy: pytorch_fid (torch), optional
        except ImportError:
            return None, f"not computed (the pytorch-fid package is not installed; Inception weights would be read from {path})"
        if not path.is_file():
            return None, f"not computed (weights not available locally: {path} is absent)"
        import torch  # heavy: torch, optional and slow to import

        import pytorch_fid.inception as pfi  # heavy: pytorch_fid (torch), optional

        fetch = pfi.load_state_dict_from_url  # pytorch-fid would download: hand it the local file instead
        pfi.load_state_dict_from_url = lambda *a, **k: torch.load(path, map_location="cpu", weights_only=True)
        try:
            model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], use_fid_inception=True,
                                resize_input=True, normalize_input=True)
        except Exception as e:
            return None, f"not computed (could not load Inception weights from {path}: {e})"
        finally:
            pfi.load_state_dict_from_url = fetch
        model.eval()
        return cls(model), f"computed (pytorch-fid Inception, {cls.PATCH}px patches, weights {path})"

    def features(self, images) -> np.ndarray:
        import torch  # heavy: torch, optional and slow to import

        out = []
        with torch.no_grad():
            for img in images:
                a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
                h, w = a.shape[:2]
                for y in range(0, h - self.PATCH + 1, self.PATCH):
                    for x in range(0, w - self.PATCH + 1, self.PATCH):
                        t = torch.from_numpy(a[y:y + self.PATCH, x:x + self.PATCH]).permute(2, 0, 1)[None]
                        out.append(self.model(t)[0].reshape(-1).numpy())
        return np.stack(out) if out else np.zeros((0, 2048))

    @staticmethod
    def distance(f1: np.ndarray, f2: np.ndarray) -> float:
        from scipy import linalg  # heavy: scipy, slow to import

        if len(f1) < 2 or len(f2) < 2:
            return math.nan
        m1, m2 = f1.mean(0), f2.mean(0)
        s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
        covmean = np.real(linalg.sqrtm(s1 @ s2))
        return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
