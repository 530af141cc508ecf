"""AVIF (AV1 still images, Pillow's own plugin) at the policy's floor."""

from __future__ import annotations

from typing import Optional

from .conventional import PillowLossyCodec
from .registry import register_codec


@register_codec("avif")
class AvifCodec(PillowLossyCodec):
    version = 1
    ext = ".avif"
    pil_format = "AVIF"
    summary = "conventional lossy: AVIF at the smallest quality that meets the floor"
    #: libaom speed 6 (Pillow's default): 0 is slowest/smallest, 10 fastest
    speed = 6
    #: up to 99: a visually lossless target is often out of reach at 95
    quality_range = (1, 99)
    typical_quality = {70.0: 60, 90.0: 90}

    @classmethod
    def unavailable(cls) -> Optional[str]:
        from PIL import features

        if features.check("avif"):
            return None
        return "this Pillow cannot write AVIF (Pillow >= 11.3 wheels include libavif)"

    def save_options(self) -> dict:
        return {"speed": self.speed, "max_threads": 1}
