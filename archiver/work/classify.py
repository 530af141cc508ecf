"""Step 2, classify: the policy decides the action from what the classifiers found and the
file's facts (-> ``classified``, with rule, reasons, evidence and params), and the codecs that
action allows are lined up in order (``codecs.choice``). A ``legal-hold`` tag
keeps the original whatever the policy says (and the policy keeps every camera raw file)."""

from __future__ import annotations

from ..catalog import queries as q
from ..catalog.models import CLASSIFIED
from ..codecs import Source
from ..errors import InputError
from . import faults
from .job import Job, Skip


class Classify:
    name = "classify"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> None:
        try:
            d = self.ctx.policy.decide(job.sp, job.img, tags=job.tags)
        except InputError as e:
            raise Skip(str(e)) from None
        job.params = dict(d.params or {})
        job.action = d.action
        job.reasons = list(d.reasons)
        job.disposition = job.params.get("original", "keep" if job.action == "keep" else "vault")
        if q.LEGAL_HOLD in job.tags and job.disposition != "keep":
            job.disposition = "keep"
            job.reasons.append("legal hold: the original is kept whatever the policy says")
        job.regions = [list(map(int, b)) for b in (d.protected_regions or [])]
        job.source = Source(job.img, job.data, [tuple(b) for b in job.regions])
        job.choice = self.ctx.codecs.choice(job.action, job.params)
        job.candidates = job.choice.candidates(job.source)
        evidence = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in (d.evidence or {}).items()}
        w.record(job, CLASSIFIED, policy=getattr(d, "policy", None) or getattr(self.ctx.policy, "name", None),
                 rule=d.rule, reasons=job.reasons, classification={"evidence": evidence, "protected_regions": job.regions},
                 action=job.action, params=job.params, disposition=job.disposition)
        faults.fault("classified")


def fall_back(job: Job, w, why: str, **clear) -> None:
    """The codec being tried cannot be used (``why``): the job moves on to the next codec the
    decision allows (``encode`` takes it). Recorded as a ``fallback`` event with the reason."""
    job.reasons.append(why)
    job.fallback = job.fallback or why
    job.encoded = None
    w.record(job, CLASSIFIED, kind="fallback", action=job.action, reasons=job.reasons, **clear)
