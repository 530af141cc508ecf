"""The backbone a .dlc file names: the one in hand, an earlier shipped release, or a refusal.

A header names its backbone and the SHA-256 of the weights that encoded it. Decoding needs those
very weights, so an upgrade of the embedded model must not strand files: every earlier release of
the ``tiny`` weights is kept in the data package ``archiver-weights-archive``
(``packages/archiver-weights-archive``, installed beside archiver) and found by digest here;
without that package, such a file is refused with one line that says what to install. A file coded with an adapter also needs that adapter (``codec/adapter.py``).
Anything else is refused with a clear error rather than decoded into a wrong image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from . import get_backbone
from ....errors import ContainerError, WeightsMismatchError
from ..adapter import backbone_for_header, get_adapted_backbone
from .base import Backbone
from .tiny import find_release, missing_release


def backbone_for(header, backbone: Optional[Backbone] = None, *, model_path: str | Path | None = None,
                 device: str = "auto") -> Backbone:
    """The backbone that decodes ``header``'s file. ``backbone``: the one the caller loaded (from
    its configuration); when None, the header's backbone is loaded by name (``model_path`` and
    ``device`` as the caller says: the codec reads no configuration)."""
    if backbone is None:
        backbone = get_backbone(header.backbone_id, model_path=model_path, device=device)
    if backbone.weights_digest != header.weights_sha256 and header.backbone_id == "tiny":
        # encoded by an earlier release of the embedded weights: the weights archive keeps those
        release = find_release(header.weights_sha256)
        if release is not None:
            backbone = get_backbone("tiny", model_path=release, device=str(backbone.device))
        elif missing_release(header.weights_sha256):
            raise WeightsMismatchError(missing_release(header.weights_sha256))
    if backbone.weights_digest != header.weights_sha256 or backbone.id != header.backbone_id:
        raise WeightsMismatchError(
            f"this file was encoded with backbone {header.backbone_id!r} weights "
            f"sha256 {header.weights_sha256[:16]}..., but the loaded backbone is {backbone.id!r} "
            f"with weights {backbone.weights_digest[:16]}...; decode it with the same weights")
    if backbone.stride != header.stride or backbone.latent_channels != header.latent_channels:
        raise ContainerError("the file's latent geometry does not match its backbone")
    return backbone_for_header(header.adapter_sha256, backbone)  # the adapter the file names, or none


def configured_backbone(cfg, *, name: Optional[str] = None, model: Optional[str] = None,
                        device: Optional[str] = None, adapter: Optional[str] = None) -> Backbone:
    """The backbone a command asked for, the rest from the configuration object ``cfg``
    (backbone, diffusers_model, device, adapter). The config's adapter goes with the config's
    model only; ``adapter="none"`` loads none."""
    name = name or cfg.backbone
    if name == "diffusers":
        model = model or cfg.diffusers_model
    if adapter is None and name == cfg.backbone and (name != "diffusers" or model == cfg.diffusers_model):
        adapter = getattr(cfg, "adapter", None)
    return get_adapted_backbone(name, model_path=model, device=device or cfg.device,
                                adapter=None if adapter == "none" else adapter)
