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
import math
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
    #: where its search starts when another codec searched the same target first
    #: (``Target.hints``): {that codec: {score: (a, b)}}, this codec's quality ~ a x that codec's
    #: quality + b, measured at two scores and interpolated between them (bench/search_hint.py)
    guided_by: dict[str, dict[float, tuple[float, float]]] = {}

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

    def first_guess_for(self, target: Target) -> int:
        """The quality the search for ``target`` starts at: predicted from a codec searched for
        the same target before (``guided_by``, ``Target.hints``) when the target's score lies
        where the prediction was measured, else the codec's typical quality for the score."""
        lo, hi = self.quality_range
        score = target.score
        for name, lines in self.guided_by.items():
            if name not in target.hints or score is None or len(lines) < 2:
                continue
            (s0, (a0, b0)), (s1, (a1, b1)) = sorted(lines.items())[:2]
            if s0 <= score <= s1:
                w = (score - s0) / (s1 - s0)
                a, b = a0 + w * (a1 - a0), b0 + w * (b1 - b0)
                return min(hi, max(lo, int(round(a * target.hints[name] + b))))
        return first_guess(score, lo, hi, self.typical_quality)

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

            q = smallest_passing(ok_at, lo, hi, guess=self.first_guess_for(target),
                                 score_at=(lambda x: verdict_at(x).score) if target.score is not None else None,
                                 target=target.score, slope=typical_slope(self.typical_quality))
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


def typical_slope(typical: Optional[dict]) -> Optional[float]:
    """Score gained per knob step between a codec's two ``typical`` {score: setting} points (its
    search's first step before it has two probes of its own), None without two points."""
    if not typical or len(typical) < 2:
        return None
    (s0, q0), (s1, q1) = sorted(typical.items())[:2]
    return (s1 - s0) / (q1 - q0) if q1 != q0 and s1 > s0 else None


def smallest_passing(ok_at, lo: int, hi: int, *, guess: int, score_at=None, target: Optional[float] = None,
                     slope: Optional[float] = None) -> Optional[int]:
    """The smallest whole number in [lo, hi] where ``ok_at`` holds (assumed monotone), or None when
    even ``hi`` fails. With ``score_at`` (the score rising with the knob) and ``target``, each next
    probe is where the score is predicted to reach the target: on the line through the two
    probes nearest it (before there are two: ``slope`` score per step, or an eighth of the range
    as a step), rounded up, then one step below the smallest passing knob to prove it the
    smallest. It bisects after two probes in a row that did not halve the bracket, and outside
    a bracket its steps grow (doubling from the fourth probe), so a misleading score cannot make
    it crawl. A good guess and slope take 2-3 probes. Without scores it brackets from ``guess``
    (doubling steps) and bisects."""
    if score_at is None or target is None:
        return _bracket_and_bisect(ok_at, lo, hi, guess)
    q = min(max(guess, lo), hi)
    fail = ok = None  # the largest failing knob below ``ok``, the smallest passing one
    scores: dict[int, float] = {}
    width, slow = None, 0  # the bracket's width before the last probe; probes in a row that did not halve it
    outside = 0  # probes so far without a bracket: from the fourth on, steps double (1, 2, 4, ...)
    while True:
        if ok_at(q):
            ok = q
        else:
            fail = q
        s = score_at(q)
        if s is not None:
            scores[q] = float(s)
        if ok is not None and (ok == lo or (fail is not None and ok - fail <= 1)):
            return ok
        if fail is not None and fail >= hi:
            return None
        first, last = (lo if fail is None else fail + 1), (hi if ok is None else ok - 1)
        nq = _predicted(scores, target, slope)
        if nq is None:  # no usable score: a doubling step out of the one side, else the middle
            nq = first + (last - first) // 2
            if ok is None:
                nq = fail + max(1, (hi - lo) // 8)
            elif fail is None:
                nq = ok - max(1, (hi - lo) // 8)
        if ok is not None and nq >= ok:
            nq = ok - 1  # the prediction says ``ok`` is the smallest: prove it
        if fail is not None and ok is not None:
            slow = slow + 1 if width is not None and ok - fail > width // 2 + 1 else 0
            width = ok - fail
            if slow >= 2:  # two probes in a row did not halve the bracket: bisect
                nq, slow = first + (last - first) // 2, 0
        else:  # no bracket yet: a score that misleads (a region, PSNR) or a poor slope cannot crawl
            outside += 1
            reach = 1 << max(0, outside - 3)
            nq = max(nq, fail + reach) if ok is None else min(nq, ok - reach)
        q = min(last, max(first, nq))


def _predicted(scores: dict[int, float], target: float, slope: Optional[float]) -> Optional[int]:
    """The smallest knob predicted to reach ``target``: on the line through the two probes whose
    scores are nearest it (``slope`` from the nearest when there is one probe or the two do not
    rise), rounded up; None without a usable slope. With ``slope``, the line's slope is kept
    within a third and three times it: two close probes' noise cannot send the search afar."""
    if not scores:
        return None
    near = sorted(scores, key=lambda k: abs(scores[k] - target))[:2]
    q0 = near[0]
    k = slope
    if len(near) == 2 and near[1] != q0:
        sec = (scores[near[1]] - scores[q0]) / (near[1] - q0)
        if sec > 0:
            k = sec if not slope else min(max(sec, slope / 3), slope * 3)
    if not k or k <= 0:
        return None
    return int(math.ceil(q0 + (target - scores[q0]) / k - 1e-9))


def _bracket_and_bisect(ok_at, lo: int, hi: int, guess: int) -> Optional[int]:
    """``smallest_passing`` without scores: from ``guess`` outwards find a bracket, doubling the
    step, then bisect it."""
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
        mid = fail + (ok - fail) // 2
        if ok_at(mid):
            ok = mid
        else:
            fail = mid
    return ok


def last_fitting(size_at, limit: int, lo: int, hi: int, *, guess: Optional[int] = None,
                 slope: float = 0.06) -> Optional[int]:
    """The largest integer in [lo, hi] whose ``size_at`` is at most ``limit``, or None when even
    ``lo`` is over; sizes are assumed to grow with the knob, and then this is ``last_true(lambda q:
    size_at(q) <= limit, lo, hi)``'s answer, found in fewer probes: from ``guess`` (default: the
    middle), each next probe is where the line through the two probes nearest the limit, in the
    logarithm of the size, crosses it (``slope``: log-size per step, until there are two); it
    bisects whenever that does not halve the bracket. A wrong guess costs probes, not the answer."""
    a = b = None  # the largest probed knob that fits, the smallest that does not
    seen: dict[int, float] = {}
    q = min(hi, max(lo, (lo + hi) // 2 if guess is None else int(guess)))
    gap = hi - lo + 1
    while True:
        size = size_at(q)
        seen[q] = math.log(max(1, size))
        if size <= limit:
            a = q if a is None else max(a, q)
        else:
            b = q if b is None else min(b, q)
        if a == hi:
            return hi
        if b == lo:
            return None
        if a is not None and b is not None and b - a <= 1:
            return a
        first, last = (lo if a is None else a + 1), (hi if b is None else b - 1)
        target = math.log(max(1, limit))
        near = sorted(seen, key=lambda k: abs(seen[k] - target))[:2]
        k = slope
        if len(near) == 2 and near[0] != near[1] and seen[near[0]] != seen[near[1]]:
            k = (seen[near[1]] - seen[near[0]]) / (near[1] - near[0])
        nq = first + (last - first) // 2
        if k > 0:
            nq = int(math.floor(near[0] + (target - seen[near[0]]) / k))
        if a is not None and b is not None:
            if b - a > gap // 2 + 1 and gap < hi - lo + 1:  # the last step did not halve it: bisect
                nq = first + (last - first) // 2
            gap = b - a
        q = min(last, max(first, nq))


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
