"""Conventional codecs for the benchmark, each driven to a target rate by searching its quality.

Rates are compared on the real file size: the quality parameter is bisected (file size grows with
quality) and the setting whose real bpp lands nearest the target is kept. A codec that cannot go
as low as the target keeps its lowest setting and its real (higher) bpp is reported, never hidden.
Encoders run single-threaded so that timings compare like with like and sizes are reproducible.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image

try:  # registers JPEG XL with Pillow
    import pillow_jxl  # noqa: F401
except ImportError:  # pragma: no cover
    pillow_jxl = None

from .. import codecs as archive_codecs


@dataclass
class SearchResult:
    quality: int
    data: bytes
    bpp: float
    #: every (quality, bpp) tried, in order: the search is auditable
    tried: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class ConventionalCodec:
    """One Pillow format with an integer quality knob in [qmin, qmax] (higher = bigger file;
    JPEG XL stops at 99 because its encoder refuses lossy quality 100)."""

    name: str
    pil_format: str
    qmin: int
    qmax: int
    options: dict = field(default_factory=dict)
    ext: str = ""

    def available(self) -> tuple[bool, str]:
        from PIL import features  # heavy: PIL.features, not loaded by archiver --help

        feature = {"WEBP": "webp", "AVIF": "avif"}.get(self.pil_format)
        if feature and not features.check(feature):
            return False, f"Pillow was built without {self.pil_format}"
        if self.pil_format == "JXL" and pillow_jxl is None:
            return False, "pillow-jxl-plugin is not installed"
        return True, ""

    def encode(self, rgb: Image.Image, quality: int) -> bytes:
        buf = io.BytesIO()
        rgb.save(buf, self.pil_format, quality=int(quality), **self.options)
        return buf.getvalue()

    def decode(self, data: bytes) -> Image.Image:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")

    def search(self, rgb: Image.Image, target_bpp: float, cache: dict | None = None) -> SearchResult:
        """Bisect the quality for the real bpp nearest ``target_bpp``; ``cache`` (quality -> bytes)
        lets several targets on the same image share encodes."""
        pixels = rgb.width * rgb.height
        cache = {} if cache is None else cache
        tried: list[tuple[int, float]] = []

        def at(q: int) -> float:
            if q not in cache:
                cache[q] = self.encode(rgb, q)
            b = len(cache[q]) * 8 / pixels
            tried.append((q, round(b, 5)))
            return b

        lo, hi = self.qmin, self.qmax
        if at(lo) >= target_bpp:
            best = lo
        else:  # invariant: bpp(lo) < target <= bpp(hi); hi is only encoded if it matters
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if at(mid) <= target_bpp:
                    lo = mid
                else:
                    hi = mid
            if hi not in cache:
                at(hi)
            best = min((lo, hi), key=lambda q: abs(len(cache[q]) * 8 / pixels - target_bpp))
        data = cache[best]
        return SearchResult(quality=best, data=data, bpp=len(data) * 8 / pixels, tried=tried)


def _archive_options(name: str) -> dict:
    """The encoder settings the archive's own codec uses (``archiver.codecs``): the bench measures
    AVIF and JPEG XL exactly as ``archive`` writes them."""
    return {k: v for k, v in archive_codecs.get_codec(name).save_options().items() if k != "lossless"}


CONVENTIONAL: dict[str, ConventionalCodec] = {
    "jpeg": ConventionalCodec("jpeg", "JPEG", 1, 95, {"optimize": True}, ".jpg"),
    "webp": ConventionalCodec("webp", "WEBP", 0, 100, {"method": 6}, ".webp"),
    "avif": ConventionalCodec("avif", "AVIF", 0, 100, _archive_options("avif"), ".avif"),
    "jxl": ConventionalCodec("jxl", "JXL", 0, 99, _archive_options("jxl"), ".jxl"),
}

#: the project's own entries, handled by archiver.bench.ours
NEURAL = ("ours", "ours-nodiff", "ae")

ALL_CODECS = tuple(CONVENTIONAL) + NEURAL
DEFAULT_CODECS = ("ours", "ours-nodiff", "ae", "jpeg", "webp", "avif", "jxl")


def get_codec(name: str) -> ConventionalCodec:
    return CONVENTIONAL[name]

