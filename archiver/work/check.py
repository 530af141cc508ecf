"""Step 5, re-read and check: the compressed file is read back from disk, must hash to what was
written, and the codec must verify it against the original (-> ``verified``, with the quality
and the reconstruction's identity). A refused file is deleted and the job falls back."""

from __future__ import annotations

import hashlib

from ..catalog.models import VERIFIED
from . import faults
from .classify import fall_back
from .codec import Verdict, codec_for
from .job import Job


class Check:
    name = "check"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> bool:
        cp = job.compressed_path
        disk = w.read_artifact(cp)
        if hashlib.sha256(disk).hexdigest() != job.row.compressed_sha256:
            verdict = Verdict(False, "the compressed file does not read back identically")
        else:
            verdict = codec_for(job.action, self.ctx).verify(disk, job)
        if verdict.ok:
            job.quality = verdict.facts
            w.record(job, VERIFIED, **verdict.facts)
            faults.fault("verified")
            return True
        w.discard_artifact(job, cp)
        job.compressed_path = None
        fall_back(job, w, verdict.why, compressed_path=None, compressed_sha256=None, compressed_size=None, bpp=None)
        return False
