"""``migrate``'s batched path: the files in one process, their diffusion device work batched.

With a CUDA device (or ``migrate --batch N`` on any), ``migrate`` and its dry run run their files
in worker threads of this process (``workers.BatchedThreadPool``) instead of worker processes:
the CPU steps (classification, conventional encodes, scores, entropy coding) run in parallel in
those threads (Pillow's AVIF/JPEG XL, OpenCV, onnxruntime and torch release the GIL), and their
diffusion encoder and decoder calls go through one ``codecs.diffusion.batching.Batcher``, which
runs them as batches on the device. The per-file steps are those of every other run.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional

from ..codecs.diffusion.batching import DEFAULT_MAX_BATCH, DEFAULT_WAIT_SECONDS, Batcher, batching
from ..codecs.diffusion.devices import cuda_device_name, resolved_device
from ..config import Config
from ..errors import UsageError
from .gpu_usage import GpuSampler


def batch_size(cfg: Config, batch: Optional[int], executor: str) -> int:
    """Up to how many files' device work one batch holds (0: no batching). ``batch`` as the
    user gave it (``--batch``), else ``DEFAULT_MAX_BATCH`` when the codec runs on CUDA (the
    ``device`` setting, or ``auto`` with a CUDA device present) and 0 on the CPU. Ray runs
    files on other machines, which one process's batcher cannot reach: no batching there."""
    if executor == "ray":
        if batch:
            raise UsageError("--batch runs the files in this process: it cannot be combined with --executor ray")
        return 0
    if batch is not None:
        return int(batch)
    return DEFAULT_MAX_BATCH if resolved_device(cfg.device).startswith("cuda") else 0


def check_device(device: str) -> str:
    """The device the batched path will run the codec on (``resolved_device``); a CUDA device
    that torch does not see is one clear ``UsageError`` before any file is touched (the files
    would otherwise each fail to load the model)."""
    where = resolved_device(device)
    if where.startswith("cuda") and cuda_device_name() is None:
        raise UsageError(f"device {device}: torch sees no CUDA device here (a CPU-only torch, or no driver); "
                         "use --device cpu or auto")
    return where


def batch_wait_seconds() -> float:
    """How long a device call waits for others to join its batch, unless every file in hand
    waits already: ``ARCHIVER_BATCH_WAIT_MS`` (default 10 ms)."""
    raw = os.environ.get("ARCHIVER_BATCH_WAIT_MS")
    if raw is None:
        return DEFAULT_WAIT_SECONDS
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not (0 <= ms <= 600_000):
        raise UsageError(f"ARCHIVER_BATCH_WAIT_MS must be a number of milliseconds from 0 to 600000, not {raw!r}")
    return ms / 1000.0


class BatchedRun:
    """The batcher and the GPU sampler of one run; ``report()`` is what the run's report says."""

    def __init__(self, max_batch: int, device: str, workers: int):
        self.batcher = Batcher(max_batch=max_batch, wait_seconds=batch_wait_seconds())
        self.device, self.workers = device, workers
        index = device.partition(":")[2]
        self.gpu = GpuSampler(index=int(index) if index.isdigit() else 0)  # as nvidia-smi numbers them

    def report(self) -> dict:
        """Batches run, their mean and largest size (overall and per kind of work), the share of
        the run the device thread was busy, and the GPU's utilisation (None: no GPU sampled)."""
        return {"device": self.device, "files_at_once": self.workers, **self.batcher.stats(),
                "wait_ms": round(self.batcher.wait_seconds * 1000, 3), "gpu_utilisation": self.gpu.summary()}


@contextmanager
def batched_device_work(cfg: Config, max_batch: int, workers: int) -> Iterator[BatchedRun]:
    """For the block, this process's diffusion device calls go through one batcher, and the
    GPU's utilisation is sampled; the batcher is closed after (no caller left waiting)."""
    run = BatchedRun(max_batch, resolved_device(cfg.device), workers)
    with run.gpu, batching(run.batcher):
        yield run

