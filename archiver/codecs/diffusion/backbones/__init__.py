"""Latent diffusion backbones behind one interface (base.Backbone).

``get_backbone`` caches loaded backbones per (name, model, device): loading and hashing a large
model once per process is enough.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from ....errors import UsageError
from .base import Backbone
from .diffusers_backbone import DiffusersBackbone

#: backbone name -> loader(model_path=, device=) -> Backbone; each loader imports its module (torch) on first use
_LOADERS: dict[str, Callable[..., Backbone]] = {}

_cache: dict[tuple, Backbone] = {}
_lock = threading.Lock()


def get_backbone(name: str = "tiny", *, model_path: str | Path | None = None, device: str = "auto") -> Backbone:
    """The backbone called ``name``: "tiny" (embedded weights) or "diffusers" (needs ``model_path``).
    An adapter is attached above the registry: ``..adapter.get_adapted_backbone``."""
    key = (name, str(model_path) if model_path else None, str(device))
    with _lock:
        if key in _cache:
            return _cache[key]
        load = _LOADERS.get(name)
        if load is None:
            raise UsageError(f"unknown backbone {name!r} (known: {', '.join(NAMES)})")
        backbone = load(model_path=model_path, device=device)
        _cache[key] = backbone
        return backbone


def register_backbone(name: str):
    """Register ``loader(model_path=, device=) -> Backbone`` under ``name`` (what headers and the
    config call it)."""

    def decorator(loader):
        _LOADERS[name] = loader
        return loader

    return decorator


@register_backbone("tiny")
def _load_tiny(*, model_path, device) -> Backbone:
    """The embedded tiny backbone (``model_path``: another weights directory)."""
    try:
        from .tiny import load_tiny  # heavy: optional, its failure is handled by the surrounding try
    except ImportError as e:
        raise UsageError(f"the embedded tiny backbone is not available in this build ({e}); "
                         "use --backbone diffusers --model DIR") from None
    return load_tiny(device=device, weights_dir=model_path)


@register_backbone("diffusers")
def _load_diffusers(*, model_path, device) -> Backbone:
    """A diffusers model directory (or cached repo id); it must be named."""
    if not model_path:
        raise UsageError("the diffusers backbone needs a model: --model DIR (or diffusers_model in the config)")
    return DiffusersBackbone.from_pretrained(model_path, device=device)


NAMES = tuple(_LOADERS)
