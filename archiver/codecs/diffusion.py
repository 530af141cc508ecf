"""The latent-diffusion codec (``archiver.codec``, Relic et al. ECCV 2024) as a ``Codec``.

Encodes at the policy's target bpp (capped by a byte budget when there is one), with finer steps
in protected regions; the backbone comes from the caller's settings and loads on first use.
Decoding finds the weights the file names (earlier shipped releases included).
"""

from __future__ import annotations

from PIL import Image

from ..errors import ArchiverError
from .base import Codec, CodecRefused, Encoded, Exactness, Source, Target
from .registry import register_codec

#: the rate used when a policy gives none (the shipped default's)
DEFAULT_BPP = 0.15


@register_codec("diffusion")
class DiffusionCodec(Codec):
    version = 1  # .dlc container version 1
    ext = ".dlc"
    exactness = Exactness.APPROX
    summary = "generative: latent diffusion at a target bpp (.dlc)"

    def __init__(self, settings=None, backbone=None):
        super().__init__(settings)
        self._backbone = backbone

    @property
    def backbone(self):
        if self._backbone is None:
            from ..codec.backbones import get_backbone

            s = self.settings
            self._backbone = get_backbone(s.backbone, model_path=s.model_path, device=s.device, adapter=s.adapter)
        return self._backbone

    def encode(self, source: Source, target: Target) -> Encoded:
        from ..codec.pipeline import encode_image

        bpp = float(target.bpp or DEFAULT_BPP)
        if target.budget_bytes is not None:
            bpp = min(bpp, target.budget_bytes * 8 / source.pixels)
        try:
            r = encode_image(source.image, self.backbone, bpp=bpp, steps=self.settings.decode_steps,
                             roi=[tuple(b) for b in source.regions] or None)
        except ArchiverError as e:  # e.g. no weights for the configured backbone
            raise CodecRefused(f"unavailable ({e})") from None
        if target.budget_bytes is not None and r.size_bytes > target.budget_bytes:
            raise CodecRefused(f"output over the budget ({r.size_bytes} > {target.budget_bytes} bytes)")
        return Encoded(r.data, self.name, self.version, self.ext, float(r.bpp), self.backbone.id,
                       self.backbone.weights_digest,
                       params={"quality": round(r.quality, 3), "t": r.t, "steps": r.steps, "target_bpp": bpp,
                               "entropy_model": r.entropy_model,
                               **({"rate_note": r.rate_note} if r.rate_note else {})})

    def decode(self, data: bytes) -> Image.Image:
        from ..codec.pipeline import decode_bytes

        d = decode_bytes(data, self.backbone)  # steps come from the header
        img = d.image
        img.info.update(d.metadata.pil_save_kwargs())
        return img
