"""Latent diffusion backbones behind one interface (base.Backbone).

``get_backbone`` caches loaded backbones per (name, model, device): loading and hashing a large
model once per process is enough.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ...errors import UsageError
from .base import Backbone

NAMES = ("tiny", "diffusers")

_cache: dict[tuple, Backbone] = {}
_lock = threading.Lock()


def get_backbone(name: str = "tiny", *, model_path: str | Path | None = None, device: str = "auto") -> Backbone:
    """The backbone called ``name``: "tiny" (embedded weights) or "diffusers" (needs ``model_path``)."""
    key = (name, str(model_path) if model_path else None, str(device))
    with _lock:
        if key in _cache:
            return _cache[key]
        if name == "tiny":
            try:
                from .tiny import load_tiny
            except ImportError as e:
                raise UsageError(f"the embedded tiny backbone is not available in this build ({e}); "
                                 "use --backbone diffusers --model DIR") from None
            backbone = load_tiny(device=device, weights_dir=model_path)
        elif name == "diffusers":
            if not model_path:
                raise UsageError("the diffusers backbone needs a model: --model DIR (or diffusers_model in the config)")
            from .diffusers_backbone import DiffusersBackbone

            backbone = DiffusersBackbone.from_pretrained(model_path, device=device)
        else:
            raise UsageError(f"unknown backbone {name!r} (known: {', '.join(NAMES)})")
        _cache[key] = backbone
        return backbone
