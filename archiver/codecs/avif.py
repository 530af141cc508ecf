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

    @classmethod
    def claims(cls, data: bytes) -> bool:
        """An ISO-BMFF file whose ``ftyp`` box names an AVIF brand (major or compatible)."""
        if data[4:8] != b"ftyp" or len(data) < 16:
            return False
        size = int.from_bytes(data[:4], "big")
        brands = data[8:12] + data[16:min(max(size, 16), 64)]
        return any(brands[i:i + 4] in (b"avif", b"avis") for i in range(0, len(brands) - 3, 4))
    summary = "conventional lossy: AVIF at the smallest quality that meets the floor"
    #: libaom speed 6 (Pillow's default): 0 is slowest/smallest, 10 fastest
    speed = 6
    #: up to 99: a visually lossless target is often out of reach at 95
    quality_range = (1, 99)
    typical_quality = {70.0: 60, 90.0: 90}
    #: JPEG XL's search is the cheaper one (``search_cost``), and its quality predicts AVIF's
    #: (fitted by bench/search_hint.py on train/ photos)
    guided_by = {"jxl": {70.0: (0.442, 27.72), 90.0: (0.866, 8.32)}}
    search_cost = 3
    #: the score from which colour is kept at full resolution
    FULL_CHROMA_FROM = 85.0

    @classmethod
    def unavailable(cls) -> Optional[str]:
        from PIL import features  # heavy: PIL.features, not loaded by archiver --help

        if features.check("avif"):
            return None
        return "this Pillow cannot write AVIF (Pillow >= 11.3 wheels include libavif)"

    def save_options(self, target=None) -> dict:
        """Speed, one thread, and full-resolution colour (4:4:4) for targets from
        ``FULL_CHROMA_FROM`` up: with halved colour (4:2:0) a visually lossless score is often out
        of reach at any quality, and where it is not, 4:4:4 is smaller at the same score (measured
        on train/ photos; below it 4:2:0 is a few percent smaller)."""
        score = getattr(target, "score", None)
        full = score is not None and score >= self.FULL_CHROMA_FROM
        return {"speed": self.speed, "max_threads": 1, **({"subsampling": "4:4:4"} if full else {})}
