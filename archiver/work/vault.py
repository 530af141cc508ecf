"""Step 6, vault: the source must still be what was read (size, mtime, SHA-256; else the
compressed file is discarded and the original left alone), then, for ``original: vault``, it is
copied into the vault and the copy re-read and checked."""

from __future__ import annotations

import datetime as dt

from . import faults, files
from .job import Job, Skip


class Vault:
    name = "vault"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> None:
        st = job.st
        if not files.same_file(job.path, st.st_size, st.st_mtime_ns, job.sha256):
            if job.compressed_path is not None:
                w.discard_artifact(job, job.compressed_path, job.row.compressed_sha256)
            raise Skip("source changed during encoding; original left untouched, compressed file discarded")
        if job.disposition != "vault":
            return
        if self.ctx.vault is None:
            job.disposition = "keep"
            job.reasons.append("no vault configured: the original is kept")
            return
        days = job.params.get("retention_days", 30)
        job.vault_expires_at = self.ctx.now() + dt.timedelta(days=int(days))
        job.vault_path = w.vault_put(job, job.vault_expires_at)
        faults.fault("vaulted")
