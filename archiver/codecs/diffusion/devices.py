"""The accelerator the diffusion codec's torch would use, for ``archiver doctor``: the one place
outside the codec's own modules that asks torch about devices goes through here."""

from __future__ import annotations

from typing import Optional


def cuda_device_name() -> Optional[str]:
    """The first CUDA device's name, or None when torch sees none."""
    import torch  # heavy: only when asked

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
