"""Step 7, commit: one transaction makes the replacement (or the decision to keep) the truth
(-> ``committed``). Only after this may the original go."""

from __future__ import annotations

from ..catalog.models import COMMITTED, ORIG_KEPT, ORIG_PRESENT
from . import faults
from .job import Job


class Commit:
    name = "commit"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> None:
        if job.action == "keep":
            job.disposition = "keep"
        removing = job.disposition in ("replace", "vault")
        fields = dict(vault_path=job.vault_path, vault_expires_at=job.vault_expires_at) if removing else {}
        if job.content_key is not None:
            fields["content_key"] = job.content_key
        record = w.record if job.shared is None else w.record_shared  # a shared artifact: its owner is checked too
        record(job, COMMITTED, kind="committed", disposition=job.disposition, **fields, **(job.shared or {}),
               original_status=ORIG_PRESENT if removing else ORIG_KEPT, committed_at=self.ctx.now(),
               reasons=job.reasons)
        faults.fault("committed")
