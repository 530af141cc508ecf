"""The accelerator the diffusion codec's torch would use, for ``archiver doctor`` and ``migrate``:
the one place outside the codec's own modules that asks torch about devices goes through here."""

from __future__ import annotations

import os
import shutil
from typing import Optional


def cuda_device_name() -> Optional[str]:
    """The first CUDA device's name, or None when torch sees none."""
    import torch  # heavy: only when asked

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def resolved_device(device: str) -> str:
    """Where the codec's torch runs for the ``device`` setting: ``cuda``/``cuda:N`` and ``cpu`` as
    given; ``auto`` is ``cuda`` when torch sees a CUDA device. Without any trace of an NVIDIA
    driver (no ``/dev/nvidiactl``, no ``nvidia-smi``) ``auto`` is ``cpu`` without importing torch."""
    if device != "auto":
        return device
    if not (os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi")):
        return "cpu"
    return "cuda" if cuda_device_name() is not None else "cpu"
