"""Step 3, encode: the next codec the decision allows makes an artifact, in memory. Codecs that
refuse (unsupported image, output not smaller, floor out of reach, no backbone, a codec bug)
are passed over with their reason recorded; when none is left, the original is kept."""

from __future__ import annotations

from ..catalog.models import CLASSIFIED
from ..catalog.queries import FELL_BACK
from .job import Job


class Encode:
    name = "encode"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> bool:
        """True with ``job.codec`` / ``job.encoded`` set; False when no codec is left (-> keep)."""
        seen = len(job.choice.attempts)
        nxt = next(job.candidates, None)
        refused = [a for a in job.choice.attempts[seen:] if not a.ok and not a.beaten]  # a loss is no fallback
        job.reasons.extend(a.line() for a in refused)
        if refused:
            job.fallback = job.fallback or refused[0].line()
        if nxt is None:
            job.action, job.codec, job.encoded = "keep", None, None
            job.reasons.append(job.choice.why_chosen(None))
            w.record(job, CLASSIFIED, kind="action_changed", action="keep", reasons=job.reasons)
            return False
        job.codec, job.encoded = nxt
        if job.action != job.codec.name:
            job.action = job.codec.name
            if job.fallback:  # the line before it says why (catalog.queries.fallback_reason reads it)
                job.reasons.append(f"{FELL_BACK}{job.action}")
            w.record(job, CLASSIFIED, kind="fallback" if job.fallback else "codec_chosen", action=job.action,
                     reasons=job.reasons)
        return True
