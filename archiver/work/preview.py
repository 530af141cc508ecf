"""Step 9, preview (only with the config's ``preview:``): once the original has left the source
folder, a small standard image goes beside the compressed file (or into the mirror tree), so
file browsers still show a thumbnail. Made from the original's pixels still in memory. A preview
that cannot be written is an event (``preview_failed``), never a failed file: the archive is
already safe and complete at this point. A file at the preview's name that archiver did not
write (its SHA-256 is not a recorded preview's) is never replaced (``preview_skipped``)."""

from __future__ import annotations

import hashlib

from ..catalog.models import COMMITTED, ORIG_REMOVED
from ..errors import UsageError
from ..preview import preview_path, render
from .job import Job


class Preview:
    name = "preview"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> None:
        ps = getattr(self.ctx, "preview", None)
        row = job.row
        if ps is None or w.dry or row is None or job.img is None:
            return
        if row.state != COMMITTED or row.original_status != ORIG_REMOVED:
            return  # the original is still there to be shown, or nothing was archived
        try:
            dest = preview_path(ps, job.sp, job.root or row.root)
            data = render(job.img.rgb, ps)
            refused = w.write_preview(job, dest, data)
        except (OSError, UsageError, ValueError) as e:
            w.event(job, "preview_failed", error=str(e))
            return
        if refused:
            w.event(job, "preview_skipped", error=refused)
            return
        w.record(job, COMMITTED, kind="preview_written", preview_path=str(dest),
                 preview_sha256=hashlib.sha256(data).hexdigest())
