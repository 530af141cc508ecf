"""Step 8, dispose: for ``replace``/``vault`` the original is removed, and only if it is still
byte-identical to what was archived (a file overwritten meanwhile is a new version, left alone).
``keep``: nothing happens."""

from __future__ import annotations

from ..catalog.models import COMMITTED, ORIG_REMOVED
from . import faults, files
from .job import Job


class Dispose:
    name = "dispose"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> None:
        if job.disposition not in ("replace", "vault"):
            return
        st = job.st
        if files.same_file(job.path, st.st_size, st.st_mtime_ns, job.sha256):
            w.remove_original(job)
            faults.fault("removed")
            w.record(job, COMMITTED, kind="original_removed", original_status=ORIG_REMOVED)
        else:
            w.record(job, COMMITTED, kind="original_changed", original_status=ORIG_REMOVED,
                     error="the original was overwritten after verification; the new content is a new version")
