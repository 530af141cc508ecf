"""Which codec an image gets: the policy's action, then its ``fallback`` list, or ``best``.

``Choice`` turns a decision (action + params) into codecs from the registry, in the order they
are tried, and keeps what happened to each (``attempts``), so the catalog, the dry run and the
report can say which codec a file got and why. The caller owns writing: it takes each candidate
from ``candidates``, writes it, reads it back, verifies it and reports the verdict with
``record``; the first that passes is the one. When none does, the original is kept.

- plain action ``X`` with ``fallback: [Y, Z]``: X, then Y, then Z (lazily: a later codec is
  only run when the earlier one failed);
- ``best`` among ``[A, B, C]``: every one is encoded and verified in memory; without a budget
  the smallest passing file comes first, with ``budget`` the best quality within it (MS-SSIM,
  then PSNR); then the ``fallback`` list as above. Non-generative codecs are searched first, the
  cheaper searches first (``Codec.search_cost``), and each later one is told the size to beat
  (``Target.max_bytes``), so a codec that cannot win stops early instead of searching to the
  end, and the qualities the earlier ones found (``Target.hints``), where its search may start.
- a JPEG original: its exact JPEG XL transcode is the baseline; a lossy candidate is taken only
  when it is smaller by ``jpeg_margin`` (default 30%) at the target.
- a HEIC/HEIF original (already lossy, with no exact smaller form here): the file itself is the
  baseline, with the same margin; below it, the original is kept untouched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Optional

from ..errors import ArchiverError
from .base import Codec, CodecBeaten, CodecRefused, CodecSettings, Encoded, Source, Target, Verdict
from .registry import get_codec

KEEP, BEST = "keep", "best"
#: a lossy re-encode of a JPEG must beat its exact JPEG XL transcode by this much (policy: jpeg_margin)
DEFAULT_JPEG_MARGIN = 0.30


def order(action: str, params: dict) -> list[str]:
    """Codec names in the order a decision tries them (``keep`` is what is left after all)."""
    if action == KEEP:
        return []
    head = list(params.get("among") or []) if action == BEST else [action]
    return head + [c for c in params.get("fallback") or [] if c not in head]


@dataclass
class Attempt:
    """One codec's try: what it made and whether it passed (``why`` when not)."""

    codec: str
    ok: bool
    why: str = ""
    size: Optional[int] = None
    bpp: Optional[float] = None
    psnr: Optional[float] = None
    ms_ssim: Optional[float] = None
    score: Optional[float] = None
    #: the codec's setting (e.g. {"quality": 62}) and how many settings the search tried
    knob: dict[str, Any] = dataclasses.field(default_factory=dict)
    probes: int = 0
    #: it lost to a smaller candidate at the same target (no failure: nothing fell back)
    beaten: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        if self.ok:
            if self.score is not None:
                q = f", SSIMULACRA2 {self.score:.1f}"
            elif self.psnr is not None and self.ms_ssim is not None:
                q = f", PSNR {self.psnr:.1f} dB, MS-SSIM {self.ms_ssim:.3f}"
            else:
                q = ""
            return f"{self.codec}: {self.size} bytes ({self.bpp:.3f} bpp){q}"
        return f"{self.codec}: {self.why}"


def _attempt(codec: str, enc: Encoded, v: Verdict) -> Attempt:
    knob = {k: enc.params[k] for k in ("quality",) if k in enc.params}
    probes = enc.params.get("probes")
    return Attempt(codec, v.ok, v.why, enc.size, enc.bpp, v.psnr, v.ms_ssim, v.score, knob,
                   len(probes) if isinstance(probes, list) else 0)


class Choice:
    def __init__(self, action: str, params: dict, settings: CodecSettings | None = None,
                 get: Optional[Callable[[str], Codec]] = None):
        self.action, self.params, self.settings = action, dict(params or {}), settings
        self._get = get or (lambda name: get_codec(name, settings))
        self.order = order(action, self.params)
        self.attempts: list[Attempt] = []
        #: for ``best``: every candidate that met the floor in memory, in the order offered
        self.ranking: list[Attempt] = []
        self.target: Target | None = None
        #: a JPEG original's exact transcode size (the baseline lossy candidates must beat)
        self.baseline: Optional[int] = None
        #: artifacts already made (a JPEG's transcode, made for the baseline, is reused as the fallback)
        self._made: dict[str, Encoded] = {}
        self._cap: Optional[int] = None
        self._baseline_what = "the exact JPEG XL transcode"

    @property
    def fallback(self) -> list[str]:
        return [c for c in self.params.get("fallback") or []]

    def codec(self, name: str) -> Codec:
        return self._get(name)

    def candidates(self, source: Source) -> Iterator[tuple[Codec, Encoded]]:
        """(codec, artifact) pairs in the order to write and check them."""
        self.target = Target.from_params(self.params, source.pixels)
        lossy = [n for n in self.order if self.codec(n).lossy]
        self._cap = self._jpeg_cap(source, lossy) if self.target.budget_bytes is None else None
        if self.action == BEST:
            among = list(self.params.get("among") or [])
            yield from self._ranked(source, among)
            rest = [c for c in self.order if c not in among]
        else:
            rest = self.order
        for name in rest:
            enc = self._encode(name, source, self._target_for(name, None))
            if enc is not None:
                yield self.codec(name), enc

    def _target_for(self, name: str, best: Optional[int]) -> Target:
        """The target for one lossy codec's search: at most the JPEG baseline less its margin, and
        less than ``best`` (the smallest candidate already at the target)."""
        if self.target.budget_bytes is not None or not self.codec(name).lossy:
            return self.target
        margin = float(self.params.get("jpeg_margin", DEFAULT_JPEG_MARGIN))
        limits = [(self._cap, f"{self._baseline_what} less {margin:.0%} ({self.baseline} bytes)")] if self._cap else []
        if best is not None:
            limits.append((best - 1, "a smaller candidate already at the target"))
        if not limits:
            return self.target
        nbytes, why = min(limits, key=lambda lw: lw[0])
        return dataclasses.replace(self.target, max_bytes=nbytes, max_why=why)

    def record(self, codec: Codec, enc: Encoded, verdict: Verdict) -> None:
        """The caller's read-back check of a candidate."""
        self.attempts.append(_attempt(codec.name, enc, verdict))

    def _encode(self, name: str, source: Source, target: Target | None = None) -> Optional[Encoded]:
        if name in self._made:
            return self._made[name]
        try:
            refusal = self.codec(name).refusal(source)
            if refusal:
                raise CodecRefused(refusal)
            enc = self.codec(name).encode(source, target or self.target)
            if enc.size >= len(source.data):  # never replace a file with a bigger one
                raise CodecRefused(f"output not smaller ({enc.size} >= {len(source.data)} bytes)")
            return enc
        except CodecBeaten as e:
            self.attempts.append(Attempt(name, False, str(e), beaten=True))
            return None
        except CodecRefused as e:
            why = str(e)
        except ArchiverError as e:  # e.g. no weights for the configured backbone: protect, don't fail
            why = f"unavailable ({e})"
        except Exception as e:  # a codec bug must not stop the file from being archived safely
            why = f"codec error ({type(e).__name__}: {e})"
        self.attempts.append(Attempt(name, False, why))
        return None

    def _jpeg_cap(self, source: Source, lossy: list[str]) -> Optional[int]:
        """For an already lossy original: the most bytes a lossy candidate may have, its exact form's
        size less ``jpeg_margin``: a JPEG's exact JPEG XL transcode (kept for the fallback), a
        HEIC's own file (re-encoding stacks a second loss on the first: it must pay for it)."""
        margin = float(self.params.get("jpeg_margin", DEFAULT_JPEG_MARGIN))
        fmt = (source.image.original_format or "").upper()
        if fmt == "HEIF" and lossy:
            self.baseline, self._baseline_what = len(source.data), "the HEIC/HEIF original itself"
            return int(self.baseline * (1.0 - margin))
        if fmt != "JPEG" or not lossy:
            return None
        enc = self._encode("lossless", source)
        if enc is None:
            return None
        self._made["lossless"] = enc
        self.baseline = enc.size
        return int(enc.size * (1.0 - margin))

    def _ranked(self, source: Source, among: list[str]) -> Iterator[tuple[Codec, Encoded]]:
        passed: list[tuple[Codec, Encoded, Verdict]] = []
        # conventional codecs first, the cheaper searches first: each later codec is told the size
        # it has to beat, and the qualities the earlier ones found (where its search may start)
        for name in sorted(among, key=lambda n: (self.codec(n).generative, self.codec(n).search_cost)):
            target = self._target_for(name, min((e.size for _, e, _ in passed), default=None))
            found = {c.name: e.params["quality"] for c, e, _ in passed if isinstance(e.params.get("quality"), int)}
            if found and target.budget_bytes is None:
                target = dataclasses.replace(target, hints=found)
            enc = self._encode(name, source, target)
            if enc is None:
                continue
            codec = self.codec(name)
            v = self._searched(codec, enc) or codec.verify(enc.data, source, self.target)
            if not v.ok:
                self.record(codec, enc, v)
                continue
            passed.append((codec, enc, v))
        if self.target.budget_bytes is not None:
            passed.sort(key=lambda p: (-(p[2].ms_ssim or 0.0), -(p[2].psnr or 0.0), p[1].size))
        else:
            passed.sort(key=lambda p: (p[1].size, p[0].name))
        self.ranking = [_attempt(c.name, e, v) for c, e, v in passed]
        for codec, enc, _ in passed:
            yield codec, enc

    def _searched(self, codec: Codec, enc: Encoded) -> Optional[Verdict]:
        """The verdict a lossy codec's search already reached on these very bytes (decoded and held
        against the same floor), so the ranking does not decode and score them again; None when
        there is none, or with a budget (ranked by MS-SSIM, which a search measures only when a
        floor asks for it). The chosen candidate is still read back and checked from disk."""
        q = enc.quality or {}
        if not codec.lossy or self.target.budget_bytes is not None or q.get("ok") is not True:
            return None
        fields = {f.name for f in dataclasses.fields(Verdict)}
        return Verdict(**{k: v for k, v in q.items() if k in fields})

    def candidates_tried(self, chosen: str | None) -> list[dict]:
        """Every codec tried for the catalog: the ones that reached the target (smallest first,
        ``chosen`` marked) and the ones that did not, each with its knob, bytes, score and why."""
        out = [dict(a.to_dict(), chosen=a.codec == chosen) for a in self.ranking]
        seen = {a.codec for a in self.ranking}
        for a in self.attempts:
            if a.codec not in seen or not a.ok:
                out.append(dict(a.to_dict(), chosen=a.ok and a.codec == chosen and a.codec not in seen))
                seen.add(a.codec)
        return out

    def reasons(self) -> list[str]:
        """One line per codec tried, for the catalog's reasons and the reports."""
        return [a.line() for a in self.attempts]

    def why_chosen(self, name: str | None) -> str:
        """A sentence on the outcome: which codec and, when it was not simply the first choice, why."""
        failed = "; ".join(a.line() for a in self.attempts if not a.ok and not a.beaten)
        if name is None:  # nothing won: a codec that could not beat the baseline is part of why
            failed = "; ".join(a.line() for a in self.attempts if not a.ok)
            return f"original kept: {failed}" if failed else "original kept: the rule tries no codec"
        if self.action == BEST:
            basis = ("the best quality within the budget" if self.target and self.target.budget_bytes is not None
                     else f"the smallest file at SSIMULACRA2 {self.target.score:g}" if self.target and self.target.score
                     else "the smallest file meeting the floor")
            ranked = ", ".join(f"{a.codec} {a.size} B" for a in self.ranking)
            return f"{name}: {basis} ({ranked or 'none met it'})" + (f"; not: {failed}" if failed else "")
        if failed:
            return f"{name} after {failed}"
        return f"{name}: first choice" + (", met the floor" if self.codec(name).lossy else "")
