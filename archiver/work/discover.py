"""Step 1, discover: read the original once, hash it, decode it, record it (-> ``discovered``).

Only regular files are read (``O_NOFOLLOW``: symlinks and devices are left alone; a FIFO is
never opened for a blocking read), and only when no process has them open for writing. Bad input
(truncated, corrupt, a bomb, not an image) ends the job as ``skipped`` with the reason; the
original is never touched. A file already skipped with the same content is not tried again.
"""

from __future__ import annotations

import hashlib
import os
import stat as statmod
from typing import Optional

from ..catalog import queries as q
from ..catalog.models import COMMITTED, DISCOVERED, FAILED, FORGOTTEN, SKIPPED
from .. import likeness
from ..errors import InputError
from ..imageio import load_image
from . import faults, files
from .job import ArchiveOutcome, Job, Skip


def _perceptual_hashes(img) -> tuple[str | None, str | None]:
    try:
        return likeness.hashes(img.rgb)
    except Exception:  # a hash is a convenience, never a reason to fail
        return None, None


class Discover:
    name = "discover"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> Optional[ArchiveOutcome]:
        """Fills ``job.data/st/sha256/img/tags/row``; returns an outcome when the job ends here."""
        sp = job.sp
        try:
            st0 = os.lstat(job.path)
        except FileNotFoundError:
            raise Skip(f"{sp}: no such file") from None
        if not statmod.S_ISREG(st0.st_mode):
            raise Skip(f"{sp}: not a regular file (symlinks and devices are left alone)")
        if files.open_for_writing(job.path):
            raise Skip(f"{sp}: another process has it open for writing; left alone (tried again later)")
        try:
            job.data, job.st = files.read_original(job.path)
        except OSError as e:
            raise Skip(f"{sp}: cannot read ({e.strerror})") from None
        st = job.st
        job.sha256 = hashlib.sha256(job.data).hexdigest()
        facts = dict(root=job.root or str(job.path.parent), size=st.st_size, mtime_ns=st.st_mtime_ns,
                     sha256=job.sha256, mode=statmod.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, inode=st.st_ino,
                     real_parent=os.path.realpath(job.path.parent))
        # reuse the latest row when it is a retry of this path; a new row for a new version
        row = w.latest(sp)
        if row is not None and row.state in (COMMITTED, FORGOTTEN):  # a file there now is a new version
            row = None
        if row is not None and row.state == SKIPPED and row.sha256 == job.sha256:
            return ArchiveOutcome.of_row(row, recovered=job.recovered)
        job.row = row
        if row is not None and row.state in (SKIPPED, FAILED):
            w.record(job, DISCOVERED, kind="retry", **facts)
        try:
            job.img = load_image(job.data, max_pixels=self.ctx.max_pixels, name=sp)
        except InputError as e:
            w.record(job, SKIPPED, kind="bad_input", error=str(e).replace("<bytes>", sp), **facts)
            return ArchiveOutcome.of_row(job.row, recovered=job.recovered)
        img = job.img
        ph, dh = _perceptual_hashes(img)
        w.record(job, DISCOVERED, kind="discovered", **facts, phash=ph, dhash=dh, format=img.original_format,
                 width=img.width, height=img.height, error=None, action=None, rule=None, reasons=None,
                 compressed_path=None, vault_path=None)
        with self.ctx.catalog.session() as s:
            job.tags = q.tags_for(s, sp)
        faults.fault("discovered")
        return None
