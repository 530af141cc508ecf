"""Any latent diffusion model saved in diffusers layout, used as a codec backbone.

Loads only local files (a directory, or a repo id already in the Hugging Face cache), never the
network. The denoiser is run with an empty prompt: for text-conditioned UNets the empty-prompt
embedding is computed once with the model's own CLIP text encoder, then the encoder is dropped.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ....errors import UsageError
from .base import Backbone

#: images larger than this on a side go through the VAE in overlapping, blended tiles, so memory
#: stays bounded for large photos (the choice depends on the size only: decoding stays deterministic)
VAE_TILE = 1024

#: the denoiser sees latents up to this many cells a side whole (1024 px at stride 8), larger
#: ones in tiles overlapping by UNET_OVERLAP cells
UNET_TILE = 128
UNET_OVERLAP = 16

#: component folders whose weights define the decoded pixels (the digest covers them)
WEIGHT_COMPONENTS = ("vae", "unet", "text_encoder")


def resolve_model_dir(model: str | Path) -> Path:
    """A local diffusers directory, or a repo id found in the Hugging Face cache (no network)."""
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download  # heavy: huggingface_hub, slow to import, only to fetch weights

        return Path(snapshot_download(str(model), local_files_only=True))
    except Exception:
        raise UsageError(
            f"diffusers model {model!r}: not a directory and not in the Hugging Face cache "
            "(nothing is downloaded; fetch it beforehand or give a local path)"
        ) from None


def _weight_files(component_dir: Path) -> tuple[list[Path], Optional[str]]:
    """The safetensors files diffusers will load from a component folder, and the variant."""
    files = sorted(component_dir.glob("*.safetensors"))
    plain = [f for f in files if "." not in f.name[: -len(".safetensors")]]
    if plain:
        return plain, None
    for variant in ("fp16", "bf16"):
        v = [f for f in files if f".{variant}." in f.name]
        if v:
            return v, variant
    return files, None


def weights_digest(model_dir: str | Path, components=WEIGHT_COMPONENTS) -> str:
    """SHA-256 over the safetensors weight files of the components, in sorted path order.

    Each file contributes its path relative to the model folder and its bytes, so renaming or
    swapping a component changes the digest.
    """
    root = Path(model_dir)
    h = hashlib.sha256()
    found = False
    for comp in components:
        d = root / comp
        if not d.is_dir():
            continue
        files, _ = _weight_files(d)
        for f in files:
            found = True
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
    if not found:
        raise UsageError(f"{root}: no safetensors weights found (only safetensors are loaded)")
    return h.hexdigest()


def _class_name(component_dir: Path) -> str:
    try:
        return json.loads((component_dir / "config.json").read_text()).get("_class_name", "")
    except (OSError, ValueError):
        raise UsageError(f"{component_dir}: missing or invalid config.json") from None


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when there is one. Asking for a device this machine lacks is a usage error
    (one line), not a traceback from deep inside torch."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r}: no CUDA device is available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def placed(model, device: torch.device, dtype: torch.dtype):
    """``model.to(device, dtype)``, skipped when every floating-point tensor is already there:
    diffusers' ``ModelMixin.to`` imports its offloading hooks, and with them ``torch._dynamo``
    (~1.5 CPU-seconds of a decode's start-up), even when nothing moves."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device == device and (t.dtype == dtype or not t.is_floating_point()) for t in tensors):
        return model
    return model.to(device, dtype)


def _downsampling(block_out_channels) -> int:
    return 2 ** (len(block_out_channels) - 1)


class DiffusersBackbone(Backbone):
    """A diffusers autoencoder + denoiser + DDIM scheduler behind the codec's Backbone interface."""

    def __init__(self, vae, unet, scheduler, *, backbone_id: str, weights_digest: str,
                 channel_steps: Optional[torch.Tensor] = None, entropy_model=None,
                 encoder_hidden_states: Optional[torch.Tensor] = None,
                 device: str | torch.device = "cpu", dtype: Optional[torch.dtype] = None,
                 t_scale: float = 1.0):
        _quiet_libraries()  # diffusers' advice about dtype casts is noise on a user's terminal
        self.device = pick_device(device)
        self.t_scale = float(t_scale)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.id = backbone_id
        self.weights_digest = weights_digest
        self.scheduler = scheduler
        # VAEs that are unstable in fp16 say so (force_upcast); keep them in fp32
        vae_dtype = torch.float32 if getattr(vae.config, "force_upcast", False) else self.dtype
        self.vae = placed(vae, self.device, vae_dtype).eval().requires_grad_(False)
        self.unet = placed(unet, self.device, self.dtype).eval().requires_grad_(False)
        self._vae_dtype = vae_dtype
        cfg = vae.config
        enc_channels = getattr(cfg, "encoder_block_out_channels", None) or cfg.block_out_channels
        self.stride = _downsampling(enc_channels)
        self.latent_channels = int(cfg.latent_channels)
        self.scaling_factor = float(getattr(cfg, "scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(getattr(cfg, "shift_factor", 0.0) or 0.0)
        self._unet_multiple = _downsampling(unet.config.block_out_channels)
        self._conditional = hasattr(unet.config, "cross_attention_dim") and unet.config.cross_attention_dim
        if self._conditional and encoder_hidden_states is None:
            raise UsageError(f"{backbone_id}: a text-conditioned UNet needs the empty-prompt embedding")
        self._ehs = None if encoder_hidden_states is None else encoder_hidden_states.to(self.device, self.dtype)
        self._channel_steps = channel_steps
        self._entropy_model = entropy_model
        self.set_vae_tile(VAE_TILE)
        #: latents larger than this many cells a side are denoised in overlapping tiles (0: never)
        self.unet_tile = UNET_TILE

    def set_vae_tile(self, tile: int) -> None:
        """Tile the autoencoder for images with a side above ``tile`` pixels (0: never)."""
        vae = self.vae
        if not hasattr(vae, "use_tiling") or not hasattr(vae, "tile_sample_min_size"):
            return
        vae.use_tiling = tile > 0
        if tile > 0:
            vae.tile_sample_min_size = tile
            vae.tile_latent_min_size = tile // self.stride

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_components(cls, vae, unet, scheduler, *, backbone_id: str, weights_digest: str,
                        channel_steps=None, entropy_model=None, encoder_hidden_states=None,
                        device: str | torch.device = "auto", t_scale: float = 1.0) -> "DiffusersBackbone":
        """Wrap already-built diffusers modules (used by the embedded tiny backbone)."""
        return cls(vae, unet, scheduler, backbone_id=backbone_id, weights_digest=weights_digest,
                   channel_steps=channel_steps, entropy_model=entropy_model,
                   encoder_hidden_states=encoder_hidden_states, device=device, t_scale=t_scale)

    @classmethod
    def from_pretrained(cls, model: str | Path, *, device: str | torch.device = "auto",
                        backbone_id: str = "diffusers") -> "DiffusersBackbone":
        """Load a diffusers-layout model (SD 1.x/2.x and alike) from local files only."""
        from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, UNet2DConditionModel, UNet2DModel  # heavy: diffusers, optional and slow to import

        _quiet_libraries()
        root = resolve_model_dir(model)
        for comp in ("vae", "unet", "scheduler"):
            if not (root / comp).is_dir():
                raise UsageError(f"{root}: not a diffusers model folder (no {comp}/)")
        digest = weights_digest(root)  # also refuses folders without safetensors weights
        vae_cls = AutoencoderTiny if _class_name(root / "vae") == "AutoencoderTiny" else AutoencoderKL
        unet_cls = UNet2DModel if _class_name(root / "unet") == "UNet2DModel" else UNet2DConditionModel
        try:
            vae = _load(vae_cls, root, "vae")
            unet = _load(unet_cls, root, "unet")
            scheduler = DDIMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
            ehs = _empty_prompt_embedding(root) if unet_cls is UNet2DConditionModel else None
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"{root}: cannot load the diffusers model ({e})") from None
        return cls(vae, unet, scheduler, backbone_id=backbone_id, weights_digest=digest,
                   encoder_hidden_states=ehs, device=pick_device(device))

    # -- Backbone interface ---------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        out = self.vae.encode(x.to(self.device, self._vae_dtype))
        if hasattr(out, "latent_dist"):
            lat = out.latent_dist.mean
        else:  # AutoencoderTiny
            lat = out.latents
        return ((lat.float() - self.shift_factor) * self.scaling_factor)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = z / self.scaling_factor + self.shift_factor
        return self.vae.decode(z.to(self.device, self._vae_dtype)).sample.float()

    @torch.no_grad()
    def model_output(self, z_t: torch.Tensor, t: int) -> torch.Tensor:
        """The denoiser on the whole latent, or on overlapping tiles blended with linear ramps
        when it is larger than ``unet_tile`` cells a side (attention cost grows with the square
        of the area; tiles keep large photos feasible)."""
        h, w = z_t.shape[-2:]
        tile = self.unet_tile
        if tile <= 0 or (h <= tile and w <= tile):
            return self._model_output(z_t, t)
        overlap = max(1, min(UNET_OVERLAP, tile // 4))
        out = torch.zeros(z_t.shape[0], self.latent_channels, h, w)
        weight = torch.zeros(1, 1, h, w)
        for top in _tile_starts(h, tile, overlap):
            for left in _tile_starts(w, tile, overlap):
                part = z_t[..., top:top + tile, left:left + tile]
                ramp = _ramp(part.shape[-2], part.shape[-1], overlap)
                out[..., top:top + tile, left:left + tile] += self._model_output(part, t).cpu() * ramp
                weight[..., top:top + tile, left:left + tile] += ramp
        return (out / weight).to(z_t.device)

    def _model_output(self, z_t: torch.Tensor, t: int) -> torch.Tensor:
        h, w = z_t.shape[-2:]
        m = self._unet_multiple
        ph, pw = (-h) % m, (-w) % m
        z = z_t.to(self.device, self.dtype)
        if ph or pw:  # the UNet's own downsampling needs multiples of m; pad and crop back
            mode = "reflect" if ph < h and pw < w else "replicate"
            z = F.pad(z, (0, pw, 0, ph), mode=mode)
        tt = torch.full((z.shape[0],), int(t), device=self.device, dtype=torch.long)
        if self._ehs is not None:
            ehs = self._ehs.expand(z.shape[0], *self._ehs.shape[1:])
            out = self.unet(z, tt, encoder_hidden_states=ehs).sample
        else:
            out = self.unet(z, tt).sample
        return out[:, : self.latent_channels, :h, :w].float()

    def channel_steps(self) -> Optional[torch.Tensor]:
        return self._channel_steps

    def entropy_model(self):
        return self._entropy_model


def _tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``n`` with at least ``overlap`` in common."""
    if n <= tile:
        return [0]
    step = tile - overlap  # callers keep overlap < tile
    starts = list(range(0, n - tile, step))
    return starts + [n - tile]


def _ramp(h: int, w: int, overlap: int) -> torch.Tensor:
    """Blend weights: 1 inside, falling linearly (never to 0) over ``overlap`` cells at the edges."""
    def axis(n):
        i = torch.arange(n, dtype=torch.float32)
        return torch.minimum(torch.ones(n), (torch.minimum(i, n - 1 - i) + 1) / (overlap + 1))

    return (axis(h)[:, None] * axis(w)[None, :])[None, None]


def _quiet_libraries() -> None:
    """No progress bars or advice about optional packages on a user's terminal."""
    from diffusers.utils import logging as dlog  # heavy: diffusers, optional and slow to import

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    if "transformers" in sys.modules:  # not imported for this: ~0.4 CPU-seconds of a tiny decode
        _quiet_transformers()


def _quiet_transformers() -> None:
    from transformers.utils import logging as tlog  # heavy: transformers, optional and slow to import

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


def _load(klass, root: Path, comp: str):
    """A component from safetensors only, the variant diffusers needs if only that is present."""
    _, variant = _weight_files(root / comp)
    return klass.from_pretrained(root, subfolder=comp, variant=variant, local_files_only=True, use_safetensors=True)


def _empty_prompt_embedding(root: Path) -> torch.Tensor:
    """The text encoder's output for the empty prompt, padded like the pipelines pad it."""
    try:
        from transformers import CLIPTextModel, CLIPTokenizer  # heavy: transformers, optional and slow to import
    except ImportError:
        raise UsageError("text-conditioned diffusers models need the 'transformers' package") from None
    _quiet_transformers()
    if not (root / "text_encoder").is_dir() or not (root / "tokenizer").is_dir():
        raise UsageError(f"{root}: a text-conditioned UNet needs text_encoder/ and tokenizer/")
    tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
    text_encoder = _load(CLIPTextModel, root, "text_encoder")
    ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        emb = text_encoder.float().eval()(ids)[0]
    return emb.detach()
