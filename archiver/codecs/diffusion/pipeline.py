"""Encode and decode images with a latent diffusion backbone (Relic et al., ECCV 2024).

Encode: pad -> autoencoder latent -> per-channel quantization (rate control picks the quality
factor) -> entropy coding -> timestep by SNR matching -> .dlc container.
Decode: verify -> entropy decode -> dequantize -> x_t = sqrt(abar_t) * y_hat -> deterministic
DDIM from t to 0 -> autoencoder decode -> crop -> original mode and metadata.

This module only composes the steps; each concern has its own home: the DDIM sampler in
``sampler``, rate control and the timestep search in ``ratecontrol``, pixels <-> tensors in
``tensors``, files in ``files``, the backbone a header names in ``backbones.lookup``. The codec
reads no configuration: callers hand in the backbone (and the steps) they configured.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ...errors import ContainerError, InputError, UsageError
from ...imageio import DEFAULT_MAX_PIXELS, ImageMetadata, LoadedImage, load_image
from . import container
from .backbones.base import Backbone
from .backbones.lookup import backbone_for
from .batching import active_batcher
from .entropy import ChannelGaussianEntropyModel, generic_entropy_model, get_entropy_model
from .quantize import QuantParams, from_units, latent_roi, noise_variance, snr_timestep, to_units
from .ratecontrol import QUALITY_MAX, QUALITY_MIN, choose_timestep, quality_to_s, rate_control, s_to_quality, search_timestep
from .sampler import DEFAULT_STEPS, denoise, denoise_many, stream_seed
from .tensors import deterministic, pad_to, to_image, to_tensor

#: finer steps inside protected regions
DEFAULT_ROI_FACTOR = 2.0
#: modes restored on decode (anything else comes back as RGB)
_GRAY16 = ("I;16", "I;16B", "I;16L", "I")


@dataclass
class EncodeResult:
    data: bytes
    bpp: float  # real: len(data) * 8 / (width * height)
    width: int
    height: int
    t: int
    steps: int
    quality: float  # Q in [0, 100]
    s: float  # the quality factor behind Q
    size_bytes: int
    target_bpp: Optional[float] = None
    rate_note: Optional[str] = None  # why the target could not be met, if it could not
    entropy_model: str = "generic"
    t_snr: int = 0  # the SNR-matched timestep (t differs by the backbone's t_scale or search_t)
    t_search: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        """Every field but the bytes (for --json and logs)."""
        return {k: v for k, v in self.__dict__.items() if k != "data"}


@dataclass
class DecodedImage:
    image: Image.Image
    metadata: ImageMetadata
    header: container.Header
    steps: int = 0
    seconds: float = 0.0


# -- encode -----------------------------------------------------------------------------------

def _alpha_png(alpha: Image.Image) -> bytes:
    buf = io.BytesIO()
    alpha.convert("L").save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _entropy_for(backbone: Backbone):
    model = backbone.entropy_model()
    if model is not None:
        return model, model.kind, "trained"
    return generic_entropy_model(), ChannelGaussianEntropyModel.kind, "generic"


class _Coder:
    """Everything that does not depend on the quality factor, so rate control only re-quantizes."""

    def __init__(self, img: LoadedImage, backbone: Backbone, roi_regions, roi_factor: float,
                 y: Optional[torch.Tensor] = None):
        self.img, self.backbone = img, backbone
        self.y = latent_of(img, backbone) if y is None else y
        c = self.y.shape[1]
        # a backbone trained on its own quantization grid (release 3) codes around zero: its
        # entropy model predicts the means; others centre each channel on the image's mean
        steps = backbone.channel_steps()
        self.delta = (torch.ones(c) if steps is None else steps.detach().float().cpu().reshape(c))
        # a backbone trained on its own quantization grid (release 3) codes around zero with its
        # own steps: nothing per channel goes into the file (format v2, quantization mode 1);
        # others centre each channel on the image's mean and send mu and delta
        grid = bool(getattr(backbone, "trained_grid", False)) and steps is not None
        self.qmode = container.QMODE_BACKBONE if grid else container.QMODE_HEADER
        self.mu = torch.zeros(c) if grid else self.y.mean(dim=(0, 2, 3))
        if max(self.y.shape[-2:]) > 65535:
            raise InputError(f"{img.width}x{img.height}: too long a side for the .dlc format")
        self.roi = latent_roi(roi_regions, backbone.stride, tuple(self.y.shape[-2:]))
        if len(self.roi) > 255:  # the header holds 255 boxes: protect their union instead
            self.roi = [(min(b[0] for b in self.roi), min(b[1] for b in self.roi),
                         max(b[2] for b in self.roi), max(b[3] for b in self.roi))]
        self.roi_factor = float(roi_factor) if self.roi else 1.0
        self.entropy, self.kind, self.entropy_name = _entropy_for(backbone)
        meta = img.metadata
        self.sections = {
            container.ALPHA: _alpha_png(img.alpha) if img.alpha is not None else b"",
            container.EXIF: meta.exif or b"",
            container.ICC: meta.icc_profile or b"",
            container.XMP: meta.xmp or b"",
        }

    def params(self, s: float) -> QuantParams:
        return QuantParams(mu=self.mu, delta=self.delta, s=s, roi=self.roi, roi_factor=self.roi_factor)

    def t_for(self, p: QuantParams) -> int:
        return snr_timestep(self.backbone.scheduler.alphas_cumprod, noise_variance(p, self.y.shape))

    def bpp_at(self, quality: float) -> float:
        """The real rate of the file at quality Q (what rate control bisects on)."""
        return _bpp(self.pack(quality_to_s(quality), 0, 0), self.img)

    def recon_at(self, s: float, t: int, steps: int) -> Image.Image:
        """What the decoder would give for quality factor ``s`` starting at step ``t``."""
        p = self.params(s)
        payload, u_hat = self.entropy.encode(to_units(self.y, p))
        y_hat = from_units(u_hat, p)
        z = denoise(self.backbone, y_hat.to(self.backbone.device), t, steps, seed=stream_seed(payload))
        return to_image(self.backbone.decode(z), self.img.width, self.img.height)

    def pack(self, s: float, t: int, steps: int) -> bytes:
        """The complete .dlc file at quality factor ``s``."""
        return self.pack_with_symbols(s, t, steps)[0]

    def pack_with_symbols(self, s: float, t: int, steps: int) -> tuple[bytes, torch.Tensor]:
        """The complete .dlc file at quality factor ``s``, and the quantized latent it codes
        (what entropy decoding its payload gives back)."""
        payload, u_hat = self.entropy.encode(to_units(self.y, self.params(s)))
        _, c, lh, lw = self.y.shape
        header = container.Header(
            backbone_id=self.backbone.id, weights_sha256=self.backbone.weights_digest,
            width=self.img.width, height=self.img.height, mode=self.img.original_mode,
            stride=self.backbone.stride, latent_channels=c, latent_height=lh, latent_width=lw,
            entropy_kind=self.kind, t=t, steps=steps, s=s, qmode=self.qmode,
            mu=[] if self.qmode else self.mu.tolist(), delta=[] if self.qmode else self.delta.tolist(),
            roi_factor=self.roi_factor, roi=self.roi,
            adapter_sha256=getattr(self.backbone, "adapter_digest", None),
        )
        sections = dict(self.sections)
        sections[container.LATENT] = payload
        return container.pack(header, sections), u_hat


def _in_batches(items: Sequence, key, batch: int, run) -> list:
    """``run`` over the items in batches of up to ``batch`` items with equal ``key(item)``; each
    item's result, in the items' order."""
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    out: list = [None] * len(items)
    for idx in groups.values():
        for k in range(0, len(idx), batch):
            chunk = idx[k:k + batch]
            for i, r in zip(chunk, run([items[i] for i in chunk])):
                out[i] = r
    return out


def _analyse_key(x: torch.Tensor, backbone: Backbone) -> tuple:
    """Padded images that one encoder batch can hold: the same backbone and size."""
    return ("analyse", id(backbone), tuple(x.shape))


def analyse(imgs: Sequence[LoadedImage], backbone: Backbone, *, batch: int = 8) -> list[torch.Tensor]:
    """The autoencoder's latent of each image (padded to the stride), images of one padded size
    run as batches of up to ``batch``: the encoder's costly part, batched across images for a GPU."""
    xs = [pad_to(to_tensor(img.rgb), backbone.stride) for img in imgs]
    return _in_batches(xs, lambda x: _analyse_key(x, backbone), batch, lambda c: _encode_padded(backbone, c))


def _encode_padded(backbone: Backbone, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The encoder on padded images of one size, as one batch: their latents, on the CPU."""
    with deterministic():
        y = backbone.encode(torch.cat(xs).to(backbone.device)).float().cpu()
    return list(y.split(1))


def latent_of(img: LoadedImage, backbone: Backbone) -> torch.Tensor:
    """``analyse([img], backbone)[0]``; through the process's ``Batcher`` when one is active, so
    that images analysed at the same time by other threads share the encoder's batch."""
    batcher = active_batcher()
    if batcher is None:
        return analyse([img], backbone)[0]
    x = pad_to(to_tensor(img.rgb), backbone.stride)
    return batcher.run(_analyse_key(x, backbone), x, lambda xs: _encode_padded(backbone, xs))


def _bpp(data: bytes, img: LoadedImage) -> float:
    return len(data) * 8.0 / (img.width * img.height)


def encode_image(img: LoadedImage, backbone: Backbone, *, bpp: Optional[float] = None,
                 quality: Optional[float] = None, steps: Optional[int] = None, search_t: bool = False,
                 roi: Optional[Sequence[tuple[int, int, int, int]]] = None,
                 roi_factor: float = DEFAULT_ROI_FACTOR) -> EncodeResult:
    """Encode a loaded image to .dlc bytes.

    ``bpp``: target rate (rate control by bisection on the real file size); ``quality``: fixed
    Q in [0, 100] (default 50 when neither is given). ``steps``: DDIM steps written into the
    header (default 4, 0 = no diffusion). ``search_t``: decode a few timesteps around the
    SNR-matched one and keep the best MS-SSIM. ``roi``: pixel boxes coded with finer steps.
    """
    start = time.perf_counter()
    if bpp is not None and quality is not None:
        raise UsageError("give either a target bpp or a quality, not both")
    if bpp is not None and not (bpp > 0 and math.isfinite(bpp)):
        raise UsageError(f"target bpp must be a positive number, not {bpp}")
    if quality is not None and not (QUALITY_MIN <= quality <= QUALITY_MAX):
        raise UsageError(f"quality must be between {QUALITY_MIN:g} and {QUALITY_MAX:g}, not {quality}")
    if steps is not None and not (0 <= steps <= 255):
        raise UsageError(f"steps must be between 0 and 255, not {steps}")
    n_steps = DEFAULT_STEPS if steps is None else int(steps)
    with deterministic():
        coder = _Coder(img, backbone, roi, roi_factor)
        note = None
        if bpp is not None:
            qv, note = rate_control(coder.bpp_at, float(bpp))
        else:
            qv = 50.0 if quality is None else float(quality)
        s = quality_to_s(qv)
        t_snr = coder.t_for(coder.params(s))
        t = choose_timestep(t_snr, getattr(backbone, "t_scale", 1.0))
        searched: list[dict] = []
        if search_t and n_steps > 0 and t_snr > 0:
            t_max = len(backbone.scheduler.alphas_cumprod) - 1
            t, searched = search_timestep(lambda tc: coder.recon_at(s, tc, n_steps), img.rgb, t_snr, t_max)
        data = coder.pack(s, t, n_steps if t > 0 else 0)
    return EncodeResult(
        data=data, bpp=_bpp(data, img), width=img.width, height=img.height, t=t,
        steps=n_steps if t > 0 else 0, quality=s_to_quality(s), s=s, size_bytes=len(data),
        target_bpp=bpp, rate_note=note, entropy_model=coder.entropy_name, t_snr=t_snr,
        t_search=searched, notes=list(img.notes), seconds=time.perf_counter() - start,
    )


class QualityProbe:
    """One image analysed once (the encoder transform is the costly part), then coded at any
    quality: ``file_at(q)`` is the .dlc that ``encode_image(img, backbone, quality=q, ...)``
    writes, for a search that decodes and scores each candidate (``archiver.codecs.diffusion``)."""

    def __init__(self, img: LoadedImage, backbone: Backbone, *, steps: Optional[int] = None,
                 roi: Optional[Sequence[tuple[int, int, int, int]]] = None, roi_factor: float = DEFAULT_ROI_FACTOR,
                 latent: Optional[torch.Tensor] = None):
        if steps is not None and not (0 <= steps <= 255):
            raise UsageError(f"steps must be between 0 and 255, not {steps}")
        self.n_steps = DEFAULT_STEPS if steps is None else int(steps)
        self.backbone = backbone
        self._symbols: dict[bytes, torch.Tensor] = {}
        with deterministic():
            self.coder = _Coder(img, backbone, roi, roi_factor, y=latent)

    @classmethod
    def many(cls, imgs: Sequence[LoadedImage], backbone: Backbone, *, steps: Optional[int] = None,
             rois: Optional[Sequence] = None, batch: int = 8) -> list["QualityProbe"]:
        """One probe per image, their encoder transforms run as batches (``analyse``)."""
        latents = analyse(imgs, backbone, batch=batch)
        rois = list(rois) if rois is not None else [None] * len(imgs)
        return [cls(img, backbone, steps=steps, roi=roi, latent=y) for img, y, roi in zip(imgs, latents, rois)]

    def file_at(self, quality: float) -> tuple[bytes, dict]:
        """The .dlc at quality Q in [0, 100], and its settings (quality, s, t, steps)."""
        if not (QUALITY_MIN <= quality <= QUALITY_MAX):
            raise UsageError(f"quality must be between {QUALITY_MIN:g} and {QUALITY_MAX:g}, not {quality}")
        with deterministic():
            s = quality_to_s(float(quality))
            t = choose_timestep(self.coder.t_for(self.coder.params(s)), getattr(self.backbone, "t_scale", 1.0))
            steps = self.n_steps if t > 0 else 0
            data, u_hat = self.coder.pack_with_symbols(s, t, steps)
        self._symbols[data] = u_hat
        return data, {"quality": round(s_to_quality(s), 3), "t": t, "steps": steps,
                      "entropy_model": self.coder.entropy_name}

    def ceiling(self) -> Image.Image:
        """The image's latent decoded as it is, before any quantization (in the original's mode):
        the most this backbone can give back of this image. No quality does better: on validation
        photos every quality's decode scored at most 0.07 SSIMULACRA2 above it
        (``bench/diffusion_ceiling.py``). One decoder pass, no entropy coding, no denoising."""
        y = self.coder.y
        batcher = active_batcher()
        if batcher is None:
            x = _decode_latents(self.backbone, [y])[0]
        else:
            x = batcher.run(("ceiling", id(self.backbone), tuple(y.shape)), y,
                            lambda ys: _decode_latents(self.backbone, ys))
        rgb = to_image(x, self.coder.img.width, self.coder.img.height)
        return _restore_mode(rgb, self.coder.img.original_mode, self.coder.img.alpha)

    def decode(self, data: bytes) -> DecodedImage:
        """``decode_bytes(data, backbone)`` of a file this probe made, without entropy decoding
        its latent again: the quantized latent the encoder coded is what decoding gives back
        (lossless coding), so the search's decodes skip that step. Other bytes: a full decode."""
        u_hat = self._symbols.get(data)
        backbone, prep = _prepare(data, self.backbone, None, DEFAULT_MAX_PIXELS, u_hat=u_hat)
        return _finish(prep, _run_one(backbone, prep))


# -- decode -----------------------------------------------------------------------------------

def _restore_mode(rgb: Image.Image, mode: str, alpha: Optional[Image.Image]) -> Image.Image:
    """Back to the original's mode where that is sensible (gray stays gray, alpha comes back)."""
    if mode in _GRAY16:
        a = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(a.astype(np.uint16))  # mode I;16
        return img if alpha is None else Image.merge("LA", (rgb.convert("L"), alpha))
    if mode in ("1", "L", "LA", "F", "La"):
        gray = rgb.convert("L")
        if alpha is not None or mode in ("LA", "La"):
            return Image.merge("LA", (gray, alpha if alpha is not None else Image.new("L", gray.size, 255)))
        return gray
    if alpha is not None or mode in ("RGBA", "RGBa", "PA"):
        a = alpha if alpha is not None else Image.new("L", rgb.size, 255)
        return Image.merge("RGBA", (*rgb.split(), a))
    return rgb


def _quant_params(header: container.Header, backbone: Backbone) -> QuantParams:
    """The file's mu and delta: from its header (mode 0), or zero means and the backbone's
    trained steps (mode 1, pinned by the weights digest the header names)."""
    c = header.latent_channels
    if header.qmode == container.QMODE_BACKBONE:
        steps = backbone.channel_steps()
        if steps is None or steps.numel() != c:
            raise ContainerError("this file's quantization steps are its backbone's, and the backbone has none for "
                                 f"{c} channels")
        mu, delta = torch.zeros(c), steps.detach().float().cpu().reshape(c)
    else:
        mu, delta = torch.tensor(header.mu), torch.tensor(header.delta)
    return QuantParams(mu=mu, delta=delta, s=header.s, roi=[tuple(b) for b in header.roi],
                       roi_factor=header.roi_factor)


@dataclass
class _Prepared:
    """One .dlc up to the denoiser: checked, entropy-decoded, dequantized (CPU work)."""

    header: container.Header
    y_hat: torch.Tensor
    seed: int
    n_steps: int
    alpha: Optional[Image.Image]
    meta: ImageMetadata
    start: float


def _prepare(data: bytes, backbone: Optional[Backbone], steps: Optional[int], max_pixels: int,
             u_hat: Optional[torch.Tensor] = None):
    """The header checked and the latent decoded (everything a decode does before the denoiser);
    returns (the backbone that decodes it, ``_Prepared``). ``u_hat``: the latent's symbols when
    the caller coded them itself (its entropy decoding is skipped)."""
    start = time.perf_counter()
    header, sections = container.unpack(data)
    if steps is not None and not (0 <= steps <= 1000):
        raise UsageError(f"steps must be between 0 and 1000, not {steps}")
    if header.pixels > max_pixels:
        raise ContainerError(f"the .dlc file claims {header.width}x{header.height} pixels, over the "
                             f"limit of {max_pixels} (refused like a decompression bomb)")
    backbone = backbone_for(header, backbone)
    n_steps = header.steps if steps is None else int(steps)
    shape = (1, header.latent_channels, header.latent_height, header.latent_width)
    alpha = None
    if container.ALPHA in sections:
        try:
            alpha = Image.open(io.BytesIO(sections[container.ALPHA]))
            if alpha.size != (header.width, header.height):  # checked before decoding its pixels
                raise ContainerError("damaged .dlc file: alpha size does not match the image")
            alpha.load()
        except ContainerError:
            raise
        except Exception:
            raise ContainerError("damaged .dlc file: unreadable alpha section") from None
        alpha = alpha.convert("L")
    with deterministic():
        try:
            if u_hat is None:
                entropy = get_entropy_model(header.entropy_kind, backbone)
                u_hat = entropy.decode(sections[container.LATENT], shape)
        except (ValueError, RuntimeError) as e:
            raise ContainerError(f"cannot decode the latent: {e}") from None
        p = _quant_params(header, backbone)
        y_hat = from_units(u_hat, p)
    meta = ImageMetadata(exif=sections.get(container.EXIF) or None,
                         icc_profile=sections.get(container.ICC) or None,
                         xmp=sections.get(container.XMP) or None)
    return backbone, _Prepared(header, y_hat, stream_seed(sections[container.LATENT]), n_steps, alpha, meta, start)


def _finish(prep: _Prepared, x: torch.Tensor) -> DecodedImage:
    header = prep.header
    rgb = to_image(x, header.width, header.height)
    image = _restore_mode(rgb, header.mode, prep.alpha)
    return DecodedImage(image=image, metadata=prep.meta, header=header, steps=prep.n_steps if header.t > 0 else 0,
                        seconds=time.perf_counter() - prep.start)


def _run_batch(backbone: Backbone, preps: list[_Prepared]) -> list[torch.Tensor]:
    """Denoise and decode latents of one shape, timestep and step count as one batch (one model
    call per step for all of them: what a GPU is fast at); each keeps its own sampler noise."""
    with deterministic():
        y = torch.cat([p.y_hat for p in preps]).to(backbone.device)
        t, n = preps[0].header.t, preps[0].n_steps
        z = denoise_many(backbone, y, t, n, [p.seed for p in preps]) if len(preps) > 1 else \
            denoise(backbone, y, t, n, seed=preps[0].seed)
        x = backbone.decode(z)
    return list(x.split(1))


def _decode_latents(backbone: Backbone, ys: list[torch.Tensor]) -> list[torch.Tensor]:
    """The decoder alone on latents of one shape, as one batch (``QualityProbe.ceiling``)."""
    with deterministic():
        x = backbone.decode(torch.cat(ys).to(backbone.device))
    return list(x.split(1))


def _decode_key(prep: _Prepared, backbone: Backbone) -> tuple:
    """Latents that one denoiser batch can hold: the same backbone, shape, timestep and steps."""
    return ("decode", id(backbone), tuple(prep.y_hat.shape), prep.header.t, prep.n_steps)


def _run_one(backbone: Backbone, prep: _Prepared) -> torch.Tensor:
    """``_run_batch(backbone, [prep])[0]``; through the process's ``Batcher`` when one is active,
    so that latents decoded at the same time by other threads share the denoiser's batches."""
    batcher = active_batcher()
    if batcher is None:
        return _run_batch(backbone, [prep])[0]
    return batcher.run(_decode_key(prep, backbone), prep, lambda preps: _run_batch(backbone, preps))


def decode_bytes(data: bytes, backbone: Optional[Backbone] = None, *, steps: Optional[int] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode .dlc bytes (verified first) to an image in the original's mode, with its metadata."""
    backbone, prep = _prepare(data, backbone, steps, max_pixels)
    return _finish(prep, _run_one(backbone, prep))


def decode_many(datas: Sequence[bytes], backbone: Backbone, *, steps: Optional[int] = None, batch: int = 8,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> list[DecodedImage]:
    """``[decode_bytes(d, backbone) for d in datas]`` with the denoiser and the autoencoder's
    decoder run on batches of up to ``batch`` files of the same latent shape, timestep and steps
    (entropy decoding stays per file, on the CPU). On a GPU this is the codec's throughput path;
    the pixels are those of one-by-one decoding, up to the float rounding of a batched kernel."""
    if batch < 1:
        raise UsageError(f"batch must be at least 1, not {batch}")
    preps = [_prepare(d, backbone, steps, max_pixels)[1] for d in datas]
    xs = _in_batches(preps, lambda p: _decode_key(p, backbone), batch, lambda c: _run_batch(backbone, c))
    return [_finish(p, x) for p, x in zip(preps, xs)]


def warm_up(backbone: Backbone, size: int = 64) -> None:
    """One tiny encode and decode through ``backbone`` (a flat ``size``-pixel square): loads its
    entropy model and lets torch set up its kernels, so that the next real decode pays only for
    its own pixels (the dashboard calls it at start, on a background thread)."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buf, "PNG")
    decode_bytes(encode_image(load_image(buf.getvalue()), backbone, quality=50.0).data, backbone)
