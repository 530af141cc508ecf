"""GPU utilisation sampled while a run works (``migrate``'s batched path, ``bench/``).

A thread of its own asks ``nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits``
every ``interval`` seconds (pynvml instead, when it is installed) and keeps the readings; without
either, or without a GPU, it keeps none and ``summary()`` is None. It imports no torch and runs
nothing on the archiving threads.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from typing import Callable, Optional


def _nvml_reader() -> Optional[Callable[[], list[float]]]:
    try:
        import pynvml  # heavy: optional (nvidia-ml-py), only while a batched run samples its GPU
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no driver, no GPU: nothing to sample
        return None
    if not handles:
        return None
    return lambda: [float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu) for h in handles]


def _smi_reader() -> Optional[Callable[[], list[float]]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None

    def read() -> list[float]:
        r = subprocess.run([exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=5)
        if r.returncode != 0:
            raise RuntimeError(f"nvidia-smi exited with {r.returncode}")
        return [float(v) for v in r.stdout.split()]

    return read


class GpuSampler:
    """``with GpuSampler() as gpu: ...`` samples the utilisation (%) of the first GPU (``index``)
    while the block runs; ``summary()`` is ``{"mean_pct", "max_pct", "samples"}`` or None."""

    def __init__(self, interval: float = 0.5, index: int = 0):
        self.interval, self.index = float(interval), int(index)
        self.samples: list[float] = []
        self.source: Optional[str] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="archiver-gpu-sampler", daemon=True)

    def _run(self) -> None:
        read = _nvml_reader()
        self.source = "nvml" if read else None
        if read is None:
            read = _smi_reader()
            self.source = "nvidia-smi" if read else None
        while read is not None and not self._stop.is_set():
            try:
                values = read()
            except Exception:  # noqa: BLE001 - the GPU went away or the tool broke: keep what was sampled
                return
            if len(values) > self.index:
                self.samples.append(values[self.index])
            self._stop.wait(self.interval)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(6)

    def summary(self) -> Optional[dict]:
        """Mean and max utilisation over the samples, or None (no GPU, nothing sampled)."""
        s = list(self.samples)
        if not s:
            return None
        return {"mean_pct": round(sum(s) / len(s), 1), "max_pct": max(s), "samples": len(s), "source": self.source}
