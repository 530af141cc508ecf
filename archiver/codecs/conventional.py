"""Conventional lossy codecs through Pillow, encoded at the policy's floor.

"At the floor" means the smallest file whose decoded image still meets the policy's quality
floor, measured by the same guard as every lossy codec (PSNR, MS-SSIM, protected-region PSNR):
a bisection on the codec's quality setting, each candidate really encoded, decoded and measured.
With a byte budget it is the other way round: the highest quality whose file fits the budget
(and it must still meet the floor). The winning candidate's bytes are the artifact: nothing is
re-encoded after it was measured.
"""

from __future__ import annotations

import io
from typing import Optional

from PIL import Image

from ..errors import ArchiverError
from ..imageio import LoadedImage
from .base import Codec, CodecBeaten, CodecRefused, Encoded, Exactness, Source, Target, Verdict, guard, measure

#: a quality used when a policy gives neither a floor nor a budget
DEFAULT_QUALITY = 60


def pixels_of(img: LoadedImage) -> Image.Image:
    """What is coded: gray stays gray, transparency is kept (and measured), otherwise RGB."""
    if img.alpha is not None:
        base = img.rgb.convert("L" if img.grayscale else "RGB")
        return Image.merge("LA" if img.grayscale else "RGBA", (*base.split(), img.alpha))
    return img.rgb.convert("L") if img.grayscale else img.rgb


class PillowLossyCodec(Codec):
    """A lossy format Pillow writes; subclasses set ``pil_format``, the quality range and
    ``save_options``."""

    exactness = Exactness.APPROX
    pil_format = ""
    quality_range = (1, 95)
    #: where a search starts: the quality that usually reaches SSIMULACRA2 70 and 90 (measured on
    #: train/: bench/perceptual_targets.py; a wrong guess costs probes, never a different result)
    typical_quality = {70.0: 60, 90.0: 88}

    #: the first bytes its files start with (``claims``); subclasses set them
    signatures: tuple[bytes, ...] = ()

    @classmethod
    def claims(cls, data: bytes) -> bool:
        """A file of ``pil_format`` by its signature (registered after the codecs whose files
        have the same one and a mark of their own, which claim theirs first)."""
        return any(data.startswith(sig) for sig in cls.signatures)

    def save_options(self, target: Optional[Target] = None) -> dict:
        """Encoder settings besides quality (they may depend on the target)."""
        return {}

    def _plugin(self) -> None:
        """Make sure Pillow can write ``pil_format`` (a clear error instead of Pillow's KeyError)."""
        why = self.unavailable()
        if why:
            raise ArchiverError(why)

    def encode_at(self, img: LoadedImage, quality: int, options: Optional[dict] = None) -> bytes:
        self._plugin()
        buf = io.BytesIO()
        pixels = pixels_of(img)
        opts = dict(self.save_options() if options is None else options)
        if pixels.mode in ("L", "LA"):
            opts.pop("subsampling", None)  # gray has no colour to subsample (and stays gray)
        pixels.save(buf, self.pil_format, quality=int(quality), **img.metadata.pil_save_kwargs(), **opts)
        return buf.getvalue()

    def decode(self, data: bytes) -> Image.Image:
        self._plugin()
        img = Image.open(io.BytesIO(data))
        if img.format != self.pil_format:
            raise ValueError(f"not a {self.pil_format} file ({img.format})")
        img.load()
        exif = img.info.get("exif")
        if exif and not exif.startswith(b"Exif\x00\x00"):  # libjxl hands back the bare TIFF block
            img.info["exif"] = b"Exif\x00\x00" + exif
        return img

    def encode(self, source: Source, target: Target) -> Encoded:
        tried: dict[int, tuple[bytes, Optional[Verdict]]] = {}
        options = self.save_options(target)

        def size_at(q: int) -> int:
            if q not in tried:
                tried[q] = (self.encode_at(source.image, q, options), None)
            return len(tried[q][0])

        def verdict_at(q: int) -> Verdict:
            data, v = tried.get(q, (None, None))
            if data is None:
                size_at(q)
                data = tried[q][0]
            if v is None:
                v = judge(source, self.decode(data), target)
                tried[q] = (data, v)
            return v

        lo, hi = self.quality_range
        if target.budget_bytes is not None:
            q = last_true(lambda x: size_at(x) <= target.budget_bytes, lo, hi)
            if q is None:
                raise CodecRefused(f"even quality {lo} is over the budget "
                                   f"({size_at(lo)} > {target.budget_bytes} bytes)")
            v = verdict_at(q)
            if not v.ok:
                raise CodecRefused(f"the best quality within the budget misses the floor ({v.why})")
        elif target.floor:
            def ok_at(x: int) -> bool:
                v = verdict_at(x)
                if not v.ok and target.max_bytes is not None and size_at(x) > target.max_bytes:
                    # a file this size already misses the target: every one that reaches it is larger
                    raise CodecBeaten(f"{size_at(x)} bytes at quality {x} and still below the target: larger than "
                                      f"{target.max_why} ({target.max_bytes} bytes)")
                return v.ok

            q = smallest_passing(ok_at, lo, hi, guess=first_guess(target.score, lo, hi, self.typical_quality),
                                 score_at=(lambda x: verdict_at(x).score) if target.score is not None else None,
                                 target=target.score)
            if q is None:
                raise CodecRefused(f"the floor is out of reach even at quality {hi} ({verdict_at(hi).why})")
            # the metrics are not strictly monotone in quality: keep the smallest passing file
            q = min((k for k, (_, v) in tried.items() if v is not None and v.ok), key=lambda k: (len(tried[k][0]), k))
        else:
            q = DEFAULT_QUALITY
        data = tried[q][0] if q in tried else self.encode_at(source.image, q, options)
        v = tried.get(q, (None, None))[1]
        if target.max_bytes is not None and len(data) > target.max_bytes:
            raise CodecBeaten(f"{len(data)} bytes at quality {q}: larger than {target.max_why} "
                               f"({target.max_bytes} bytes)")
        return Encoded(data, self.name, self.version, self.ext, len(data) * 8 / source.pixels,
                       params={"quality": q, **options, "probes": probes(tried)},
                       quality=v.to_dict() if v is not None else {})


def probes(tried: dict) -> list[dict]:
    """What a search tried, for the catalog: each knob setting with its bytes and, where it was
    measured, its score (and PSNR) and whether it met the target."""
    out = []
    for q in sorted(tried):
        data, v = tried[q]
        p = {"quality": q, "bytes": len(data)}
        if v is not None:
            p.update(score=v.score, psnr=round(v.psnr, 2) if v.psnr is not None else None, ok=v.ok)
        out.append(p)
    return out


def judge(source: Source, recon: Image.Image, target: Target) -> Verdict:
    """One search probe measured and held against the floor: the perceptual score, PSNR, and
    MS-SSIM only when a floor asks for it (the check step measures everything again)."""
    v = measure(source, recon, ms_ssim="min_ms_ssim" in target.floor)
    why = guard(v, target.floor)
    v.ok, v.why = why is None, why or ""
    return v


def first_guess(score: Optional[float], lo: int, hi: int, typical: Optional[dict] = None) -> int:
    """Where a search starts: the knob setting that usually reaches ``score`` (a line through the
    codec's ``typical`` {score: setting} points), else a fraction of the range; the middle
    without a score."""
    if score is None:
        return (lo + hi) // 2
    if typical and len(typical) >= 2:
        (s0, q0), (s1, q1) = sorted(typical.items())[:2]
        return min(hi, max(lo, int(round(q0 + (score - s0) * (q1 - q0) / (s1 - s0)))))
    return int(round(lo + (hi - lo) * min(0.95, max(0.05, 0.9 * score / 100.0))))


def smallest_passing(ok_at, lo: int, hi: int, *, guess: int, score_at=None, target: Optional[float] = None) -> Optional[int]:
    """The smallest whole number in [lo, hi] where ``ok_at`` holds (assumed monotone), or None when
    even ``hi`` fails. With ``score_at`` (the score rising with the knob) and ``target``, the next
    probe is interpolated between the nearest failing and passing ones (bisection when that does
    not halve the gap), so a search takes ~3-5 probes instead of ~7; from ``guess`` outwards it
    first finds a bracket, doubling its step."""
    q = min(max(guess, lo), hi)
    fail, ok = (None, q) if ok_at(q) else (q, None)
    step = max(1, (hi - lo) // 8)
    while ok is None:  # go up until something passes
        if fail >= hi:
            return None
        nq = min(hi, fail + step)
        if ok_at(nq):
            ok = nq
        else:
            fail, step = nq, step * 2
    while fail is None:  # go down until something fails
        if ok <= lo:
            return ok
        nq = max(lo, ok - step)
        if ok_at(nq):
            ok, step = nq, step * 2
        else:
            fail = nq
    while ok - fail > 1:
        gap = ok - fail
        nq = fail + gap // 2
        if score_at is not None and target is not None:
            sf, so = score_at(fail), score_at(ok)
            if so is not None and sf is not None and so > sf:
                nq = fail + int(round((target - sf) / (so - sf) * gap))
            nq = min(ok - 1, max(fail + 1, nq))
        if ok_at(nq):
            ok = nq
        else:
            fail = nq
        if ok - fail > gap // 2 and ok - fail > 1:  # interpolation did not halve it: bisect once
            mid = fail + (ok - fail) // 2
            if ok_at(mid):
                ok = mid
            else:
                fail = mid
    return ok


def _first_true(pred, lo: int, hi: int) -> int:
    """The smallest integer in [lo, hi] where ``pred`` holds, ``pred`` assumed monotone and true at hi."""
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def last_true(pred, lo: int, hi: int) -> Optional[int]:
    """The largest integer in [lo, hi] where ``pred`` holds (monotone, true at the low end), or None."""
    if not pred(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pred(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
