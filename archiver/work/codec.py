"""The two places where the unit of work meets a codec: the encode step asks ``codec_for(action)``
for an artifact, and the check step asks the same codec to verify what was read back from disk.

Today's codecs are adapted here (the latent-diffusion codec and ``storage.lossless``); the codec
registry (``archiver.codecs``) replaces this module without the steps changing.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Optional

from PIL import Image

from ..errors import ArchiverError
from ..imageio import LoadedImage
from ..storage import lossless
from . import guard


@dataclass
class Encoded:
    data: bytes
    ext: str
    codec: str
    bpp: float | None = None
    backbone: str | None = None
    backbone_digest: str | None = None


@dataclass
class Verdict:
    """What the check step learns from the artifact read back from disk."""

    ok: bool
    why: str = ""
    facts: dict = field(default_factory=dict)  # catalog fields: quality, reconstruction hash, exactness


class Unavailable(Exception):
    """The codec cannot produce an artifact for this file (the reason is recorded)."""


def image_digest(img: Image.Image) -> str:
    """SHA-256 of a decoded image (mode, size, pixels): the reconstruction's identity."""
    h = hashlib.sha256(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


class DiffusionCodec:
    """The project's latent-diffusion codec (``archiver.codec.pipeline``), backbone loaded lazily."""

    def __init__(self, backbone=None, *, name: str = "tiny", model_path=None, device: str = "auto",
                 steps: int | None = None, adapter=None):
        self._backbone, self.name, self.model_path, self.device, self.steps = backbone, name, model_path, device, steps
        self.adapter = adapter  # the diffusers model's adapter folder (config: adapter)

    @property
    def backbone(self):
        if self._backbone is None:
            from ..codec.backbones import get_backbone

            self._backbone = get_backbone(self.name, model_path=self.model_path, device=self.device,
                                          adapter=self.adapter)
        return self._backbone

    def encode(self, img: LoadedImage, params: dict, regions: list) -> Encoded:
        from ..codec import pipeline

        kw: dict[str, Any] = {"bpp": params.get("bpp")}
        if self.steps:
            kw["steps"] = self.steps
        if regions and "roi" in _params_of(pipeline.encode_image):
            kw["roi"] = [tuple(b) for b in regions]  # finer quantisation where faces/text are
        r = pipeline.encode_image(img, self.backbone, **kw)
        return Encoded(r.data, ".dlc", "dlc", float(r.bpp), self.backbone.id, self.backbone.weights_digest)

    def decode(self, data: bytes) -> Image.Image:
        from ..codec import pipeline

        d = pipeline.decode_bytes(data, self.backbone)  # steps come from the header
        img = d.image
        meta = getattr(d, "metadata", None)
        if meta is not None:
            for k, v in meta.pil_save_kwargs().items():
                img.info[k] = v
        return img


def _params_of(fn) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


class _Lossless:
    """``storage.lossless``: JPEG -> JPEG XL (byte-exact), other formats pixel-exact."""

    def __init__(self, ctx):
        self.ctx = ctx

    def encode(self, job) -> Encoded:
        try:
            blob, ext = lossless.compress(job.data)
        except lossless.LosslessUnsupported as e:
            raise Unavailable(f"lossless recompression not possible ({e}); original kept") from None
        return Encoded(blob, ext, "jxl-jpeg" if ext == lossless.JXL_EXT else "axl")

    def verify(self, disk: bytes, job) -> Verdict:
        try:
            back = lossless.restore(disk)
        except ArchiverError as e:
            return Verdict(False, f"lossless file does not decode ({e})")
        if hashlib.sha256(back).hexdigest() == job.sha256:
            return Verdict(True, facts={"psnr": None, "ms_ssim": 1.0, "reconstruction_sha256": job.sha256,
                                        "restore_exact": "bytes"})
        if lossless.same_pixels(back, job.data):
            return Verdict(True, facts={"psnr": None, "ms_ssim": 1.0,
                                        "reconstruction_sha256": hashlib.sha256(back).hexdigest(),
                                        "restore_exact": "pixels"})
        return Verdict(False, "lossless restore differs from the original")


class _Diffusion:
    """The diffusion codec; its reconstruction must pass the quality guard."""

    def __init__(self, ctx):
        self.codec = ctx.codec

    def encode(self, job) -> Encoded:
        if self.codec is None:
            raise Unavailable("no diffusion codec available")
        try:
            return self.codec.encode(job.img, job.params, job.regions)
        except ArchiverError as e:  # e.g. no weights for the configured backbone: protect, don't fail
            raise Unavailable(f"diffusion codec unavailable ({e})") from None
        except Exception as e:  # a codec bug must not stop the file from being archived safely
            raise Unavailable(f"diffusion codec error ({type(e).__name__}: {e})") from None

    def verify(self, disk: bytes, job) -> Verdict:
        try:
            recon = self.codec.decode(disk)
        except Exception as e:  # whatever the reason, an unverifiable file is not a replacement
            return Verdict(False, f"compressed file does not decode ({type(e).__name__}: {e})")
        q = guard.quality(job.img, recon, job.regions)
        why = guard.below_floor(q, job.params.get("floor") or {})
        facts = {k: q.get(k) for k in ("psnr", "ms_ssim", "region_psnr")}
        facts.update(reconstruction_sha256=image_digest(recon), restore_exact="approx")
        return Verdict(why is None, why or "", facts)


def codec_for(action: str, ctx) -> Optional[object]:
    """The codec behind a policy action (``lossless`` or ``diffusion``)."""
    return {"lossless": _Lossless, "diffusion": _Diffusion}[action](ctx)
