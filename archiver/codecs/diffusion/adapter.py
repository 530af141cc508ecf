"""Adapters: the codec's trained parts for a frozen latent diffusion model.

Relic et al. keep the foundation model frozen and train only what the codec adds around it:
the quantization and the entropy model of its latent. An adapter is exactly that, for one
backbone's weights: per-channel quantization steps and a trained entropy model, stored as
``adapter.safetensors`` + ``adapter.json`` in a folder of its own beside (never inside) the
model folder, and named by digest in every file coded with it (``.dlc`` version 2). A file
coded with an adapter decodes only with that adapter: its entropy model defines the bits.

``archiver train adapter`` writes them (``archiver_train/adapter.py`` in packages/archiver-train); ``get_adapted_backbone(...,
adapter=DIR)`` and the config's ``adapter:`` attach one; ``backbone_for_header`` picks the
backbone a file needs or refuses with ``AdapterError`` (exit code 10).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ...errors import AdapterError
from .backbones import get_backbone
from .backbones.base import Backbone

FORMAT = "archiver-adapter"
VERSION = 1
CONFIG_FILE = "adapter.json"
WEIGHTS_FILE = "adapter.safetensors"
#: adapters replaced by a later training run in the same folder, one sub-folder per digest, so
#: files coded with them still decode (found by digest)
PREVIOUS_DIR = "previous"


def adapter_dir(path: str | Path) -> Path:
    """The adapter folder for ``path`` (the folder, or its adapter.json / adapter.safetensors)."""
    p = Path(path).expanduser()
    if p.is_file() and p.name in (CONFIG_FILE, WEIGHTS_FILE):
        p = p.parent
    return p


def adapter_digest(path: str | Path) -> str:
    """SHA-256 over adapter.json then adapter.safetensors: any change to either is another adapter."""
    d = adapter_dir(path)
    h = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        with open(d / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _is_adapter(d: Path) -> bool:
    return (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file()


@dataclass
class Adapter:
    path: Path
    digest: str
    config: dict
    channel_steps: torch.Tensor  # (C,)
    entropy: torch.nn.Module  # eval mode, CDF tables loaded

    @property
    def backbone_digest(self) -> str:
        return self.config["backbone"]["weights_sha256"]

    @property
    def latent_channels(self) -> int:
        return int(self.config["backbone"]["latent_channels"])

    @property
    def t_scale(self) -> Optional[float]:
        v = (self.config.get("codec") or {}).get("t_scale")
        return None if v is None else float(v)

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.digest, "entropy": self.config["entropy"].get("kind"),
                "backbone_sha256": self.backbone_digest}


def _bad(path: Path, why: str) -> AdapterError:
    return AdapterError(f"{path}: not a usable archiver adapter ({why})")


def _check_config(d: Path, cfg) -> None:
    from .entropy import ENTROPY_MODELS  # heavy: compressai (via codecs.diffusion.entropy), which codecs.diffusion.adapter does not load at import

    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise _bad(d, f"{CONFIG_FILE} is not an {FORMAT} file")
    version = cfg.get("version")
    if not isinstance(version, int) or version < 1:
        raise _bad(d, "no format version")
    if version > VERSION:
        raise _bad(d, f"format version {version} is newer than this archiver reads ({VERSION})")
    bb = cfg.get("backbone")
    if not isinstance(bb, dict):
        raise _bad(d, "no backbone section")
    digest = bb.get("weights_sha256")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise _bad(d, "no backbone weights digest")
    if not isinstance(bb.get("latent_channels"), int) or bb["latent_channels"] < 1:
        raise _bad(d, "no latent channel count")
    ent = cfg.get("entropy")
    if not isinstance(ent, dict) or ent.get("kind") not in ENTROPY_MODELS:
        raise _bad(d, f"unknown entropy model {None if not isinstance(ent, dict) else ent.get('kind')!r}")


def load_adapter(path: str | Path) -> Adapter:
    """Read and check an adapter folder (safetensors only, never pickle)."""
    from safetensors import SafetensorError  # heavy: safetensors (torch), only with the diffusion codec
    from safetensors.torch import load_file  # heavy: safetensors (torch), only with the diffusion codec

    from .entropy import build_entropy_model  # heavy: compressai (via codecs.diffusion.entropy), which codecs.diffusion.adapter does not load at import

    d = adapter_dir(path)
    if not d.is_dir():
        raise AdapterError(f"{d}: adapter not found (train one with `archiver train adapter`)")
    if not _is_adapter(d):
        raise _bad(d, f"needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        cfg = json.loads((d / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise _bad(d, f"unreadable {CONFIG_FILE}: {e}") from None
    _check_config(d, cfg)
    digest = adapter_digest(d)
    try:
        state = load_file(str(d / WEIGHTS_FILE))
    except (OSError, SafetensorError) as e:
        raise _bad(d, f"unreadable {WEIGHTS_FILE}: {e}") from None
    c = int(cfg["backbone"]["latent_channels"])
    steps = state.get("channel_steps")
    if steps is None or tuple(steps.shape) != (c,) or not bool(torch.isfinite(steps).all()) or bool((steps <= 0).any()):
        raise _bad(d, f"channel_steps must be {c} positive numbers")
    ent_cfg = dict(cfg["entropy"])
    if int(ent_cfg.get("latent_channels", c)) != c:
        raise _bad(d, "entropy model and backbone disagree on the latent channels")
    try:
        entropy = build_entropy_model(ent_cfg)
        prefix = "entropy."
        # the CDF tables travel with the weights: decoding never depends on recomputing them
        entropy.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    except (RuntimeError, TypeError, KeyError, ValueError) as e:
        raise _bad(d, f"entropy weights do not fit its config: {e}") from None
    entropy.eval().requires_grad_(False)
    return Adapter(path=d, digest=digest, config=cfg, channel_steps=steps.float(), entropy=entropy)


def save_adapter(out: str | Path, config: dict, channel_steps: torch.Tensor, entropy: torch.nn.Module) -> str:
    """Write an adapter folder atomically (temp names, then renames) and return its digest.

    ``entropy`` must have its CDF tables built (``update(force=True)``): they are saved with it.
    """
    from safetensors.torch import save_file  # heavy: safetensors (torch), only with the diffusion codec

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {"channel_steps": channel_steps.detach().float().cpu().contiguous()}
    tensors.update({f"entropy.{k}": v.detach().cpu().contiguous() for k, v in entropy.state_dict().items()})
    cfg = {**config, "format": FORMAT, "version": VERSION}
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    tmp_w, tmp_c = d / (WEIGHTS_FILE + ".tmp"), d / (CONFIG_FILE + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"format": FORMAT, "config": json.dumps(cfg, sort_keys=True)})
    tmp_c.write_text(text)
    for tmp in (tmp_w, tmp_c):
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp_w, d / WEIGHTS_FILE)
    os.replace(tmp_c, d / CONFIG_FILE)
    return adapter_digest(d)


def keep_previous(out: str | Path) -> Optional[Path]:
    """Copy the adapter now in ``out`` to ``out/previous/<digest>/`` before it is replaced, so
    files coded with it keep decoding (``find_adapter`` looks there)."""
    d = Path(out)
    if not _is_adapter(d):
        return None
    digest = adapter_digest(d)
    dest = d / PREVIOUS_DIR / digest[:16]
    if not (_is_adapter(dest) and adapter_digest(dest) == digest):
        dest.mkdir(parents=True, exist_ok=True)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copy2(d / name, dest / name)
    return dest


def find_adapter(digest: str, near: list[Path]) -> Optional[Path]:
    """An adapter folder with this digest among ``near`` and their ``previous/`` sub-folders."""
    for base in near:
        base = adapter_dir(base)
        cands = [base] + (sorted((base / PREVIOUS_DIR).iterdir()) if (base / PREVIOUS_DIR).is_dir() else [])
        for c in cands:
            if _is_adapter(c) and adapter_digest(c) == digest:
                return c
    return None


class AdaptedBackbone(Backbone):
    """A backbone with an adapter attached: the backbone's own encoder, denoiser and decoder; the
    adapter's steps and entropy model. Everything else is the backbone's (delegated)."""

    def __init__(self, base: Backbone, adapter: Adapter):
        self.base, self.adapter = base, adapter
        self.adapter_digest = adapter.digest
        # the interface's attributes, including the ones Backbone gives defaults (eta, ...), are the
        # backbone's own: only steps, entropy model and (when it says so) t_scale are the adapter's
        for name in ("id", "stride", "latent_channels", "weights_digest", "scheduler", "device", "dtype",
                     "eta", "trained_grid"):
            setattr(self, name, getattr(base, name))
        self.t_scale = adapter.t_scale if adapter.t_scale is not None else float(getattr(base, "t_scale", 1.0))

    def __getattr__(self, name):  # vae, unet, set_vae_tile ... of the wrapped backbone
        if name in ("base", "adapter"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def encode(self, x):
        return self.base.encode(x)

    def decode(self, z):
        return self.base.decode(z)

    def model_output(self, z_t, t):
        return self.base.model_output(z_t, t)

    def channel_steps(self):
        return self.adapter.channel_steps

    def entropy_model(self):
        return self.adapter.entropy

    def describe(self) -> dict:
        return {**self.base.describe(), "adapter": self.adapter.describe()}


_adapted: dict[tuple, AdaptedBackbone] = {}
_adapted_lock = threading.Lock()


def get_adapted_backbone(name: str = "tiny", *, model_path: str | Path | None = None, device: str = "auto",
                         adapter: str | Path | None = None) -> Backbone:
    """``get_backbone(name, model_path=, device=)`` with the adapter in folder ``adapter`` attached
    (none: the bare backbone); cached per (backbone, adapter digest) like the backbones."""
    base = get_backbone(name, model_path=model_path, device=device)
    if not adapter:
        return base
    ad = load_adapter(adapter)
    key = (name, str(model_path) if model_path else None, str(device), ad.digest)
    with _adapted_lock:
        if key not in _adapted:
            _adapted[key] = attach(base, ad)
        return _adapted[key]


def attach(backbone: Backbone, adapter: Adapter) -> AdaptedBackbone:
    """``backbone`` with ``adapter``; refused when the adapter was trained for other weights."""
    base = getattr(backbone, "base", backbone)
    if adapter.backbone_digest != base.weights_digest:
        raise AdapterError(
            f"adapter {adapter.path} was trained for backbone weights {adapter.backbone_digest[:16]}..., "
            f"but the loaded model's weights are {base.weights_digest[:16]}...; train an adapter for "
            "this model (`archiver train adapter`)")
    if adapter.latent_channels != base.latent_channels:
        raise AdapterError(f"adapter {adapter.path} is for {adapter.latent_channels} latent channels, "
                           f"the model has {base.latent_channels}")
    return AdaptedBackbone(base, adapter)


def backbone_for_header(adapter_sha256: Optional[str], backbone: Backbone) -> Backbone:
    """The backbone that decodes a file naming ``adapter_sha256`` (None: no adapter).

    A file coded without an adapter decodes with the bare backbone even if one is attached (the
    backbone's own entropy model, not the adapter's, is what its entropy kind names). A file
    coded with one needs exactly that adapter: the loaded one, or an earlier one kept beside it
    (``previous/``); otherwise ``AdapterError``.
    """
    base = getattr(backbone, "base", backbone)
    if adapter_sha256 is None:
        return base
    have = getattr(backbone, "adapter_digest", None)
    if have == adapter_sha256:
        return backbone
    if have is not None:
        found = find_adapter(adapter_sha256, [backbone.adapter.path])
        if found is not None:
            return attach(base, load_adapter(found))
        raise AdapterError(
            f"this file was coded with adapter sha256 {adapter_sha256[:16]}..., but the loaded adapter "
            f"{backbone.adapter.path} is {have[:16]}... (and no earlier adapter with that digest is kept "
            f"in its {PREVIOUS_DIR}/ folder); decode with --adapter pointing at the adapter it was coded with")
    raise AdapterError(
        f"this file was coded with adapter sha256 {adapter_sha256[:16]}... and no adapter is loaded; "
        "decode with --adapter DIR (or `adapter:` in the config) pointing at that adapter")
