"""Everything the steps change in the world goes through writers: the catalog row, the
compressed file, the vault, the original. ``RealWriters`` do it (durably, in that order of
trust); ``DryWriters`` do nothing but keep the artifact in memory and the row detached, so the
dry run runs the very same steps and reports what they found."""

from __future__ import annotations

import os
import stat as statmod
from pathlib import Path
from typing import Optional

from ..catalog import duplicates as dup
from ..catalog import queries as q
from ..catalog.models import TRANSITIONS, FileVersion, utcnow
from ..errors import ArchiverError, CatalogError
from ..storage import atomic
from . import faults, files
from .invariant import remove_original, replacement_holds


class RealWriters:
    dry = False

    def __init__(self, ctx):
        self.ctx = ctx

    # the catalog
    def latest(self, path: str) -> Optional[FileVersion]:
        with self.ctx.catalog.session() as s:
            return q.latest_version(s, path)

    def record(self, job, state: str, kind: str | None = None, **fields) -> FileVersion:
        """One transaction: the row moves to ``state`` with ``fields``, and an event is logged."""
        with self.ctx.catalog.session() as s:
            row = s.get(FileVersion, job.row.id) if job.row is not None and job.row.id else (job.row or FileVersion(path=job.sp))
            q.transition(s, row, state, kind=kind, **fields)
        job.row = row
        return row

    def record_shared(self, job, state: str, kind: str | None = None, **fields) -> FileVersion:
        """``record`` for a row that names another row's artifact: in the same transaction, that
        row must still be committed with that very artifact (else ArchiverError: tried again later)."""
        with self.ctx.catalog.session() as s:
            if not dup.owner_holds(s, fields["artifact_of"], fields["compressed_path"], fields["compressed_sha256"]):
                raise ArchiverError(f"{job.sp}: the stored file it would share ({fields['compressed_path']}) changed "
                                    "meanwhile; not committed, tried again")
            row = s.get(FileVersion, job.row.id)
            q.transition(s, row, state, kind=kind, **fields)
        job.row = row
        return row

    def shareable(self, content_key: str):
        """A committed row with this key whose artifact, read back now, gives what the catalog
        promises; None when there is none."""
        with self.ctx.catalog.session() as s:
            rows = dup.shareable(s, content_key)
        return next((r for r in rows if replacement_holds(r, self.ctx.codecs).ok), None)

    # the compressed file
    def write_artifact(self, job, path: Path, data: bytes) -> None:
        st = job.st
        atomic.create_new(path, data, files.tmp_for(path, job.row.id), mode=statmod.S_IMODE(st.st_mode),
                          owner=(st.st_uid, st.st_gid), before_link=lambda: faults.fault("during_write"))

    def read_artifact(self, path: Path) -> bytes:
        return path.read_bytes()

    def discard_artifact(self, job, path: Path, sha: str | None = None) -> None:
        """Remove a compressed file this job wrote, only while it is still that file (by SHA-256)."""
        files.remove_own(path, job.row.id, sha)

    def discard_lost(self, row) -> None:
        with self.ctx.catalog.session() as s:
            others = dup.artifact_refs(s, row.compressed_path, excluding=row.id)
        discard_lost(row, others)

    # the vault and the original
    def vault_put(self, job, expires_at) -> Optional[str]:
        return str(self.ctx.vault.put(job.path, job.sha256, expires_at=expires_at, source_path=job.sp))

    def remove_original(self, job):
        """The original goes only through the invariant's gate: (kind, why) when it stays."""
        return remove_original(job.row, job.path, self.ctx)

    # extras that are no part of the archive's safety
    def write_preview(self, job, path: Path, data: bytes) -> str | None:
        """Write the preview without ever replacing a file archiver did not write: a name that is
        free gets it (never clobbering); a preview archiver wrote earlier (a recorded SHA-256 that
        still matches) is replaced; anything else stays and the reason is returned."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            with self.ctx.catalog.session() as s:
                ours = q.preview_written_at(s, str(path))
            if ours is None:
                return f"{path} exists and archiver did not write it; left alone"
            why = files.remove_own(path, ours.id, ours.preview_sha256)
            if why is not None:
                return f"{path} is no longer the preview archiver wrote ({why})"
        try:
            atomic.write_bytes(path, data, mode=0o644, overwrite=False)
        except FileExistsError:
            return f"{path} was written by someone else meanwhile; left alone"
        return None

    def event(self, job, kind: str, **detail) -> None:
        """An event on the job's row without a change of state (e.g. a preview that failed)."""
        with self.ctx.catalog.session() as s:
            q.add_event(s, kind, fv=s.get(FileVersion, job.row.id), **detail)


class DryWriters:
    """Writers that do nothing: the row stays detached (the state machine is still enforced),
    the artifact lives in memory, the vault and the original are left alone."""

    dry = True

    def __init__(self, ctx):
        self.ctx = ctx
        self.artifacts: dict[Path, bytes] = {}

    def latest(self, path: str) -> Optional[FileVersion]:
        return None  # every dry job starts as if new: nothing in the catalog is touched

    def record(self, job, state: str, kind: str | None = None, **fields) -> FileVersion:
        row = job.row if job.row is not None else FileVersion(path=job.sp)
        old = row.state if job.row is not None else None
        if state not in TRANSITIONS.get(old, ()):
            raise CatalogError(f"{job.sp}: illegal state change {old} -> {state}")
        for k, v in fields.items():
            setattr(row, k, v)
        row.state, row.updated_at = state, utcnow()
        job.row = row
        return row

    record_shared = record

    def shareable(self, content_key: str):
        """What the real run would share: read only (the catalog and the artifact, nothing written)."""
        with self.ctx.catalog.session() as s:
            rows = dup.shareable(s, content_key)
        return next((r for r in rows if replacement_holds(r, self.ctx.codecs).ok), None)

    def write_artifact(self, job, path: Path, data: bytes) -> None:
        self.artifacts[path] = bytes(data)

    def read_artifact(self, path: Path) -> bytes:
        return self.artifacts[path]

    def discard_artifact(self, job, path: Path, sha: str | None = None) -> None:
        self.artifacts.pop(path, None)

    def discard_lost(self, row) -> None:
        return None

    def vault_put(self, job, expires_at) -> Optional[str]:
        return None

    def remove_original(self, job):
        return None

    def write_preview(self, job, path: Path, data: bytes) -> str | None:
        return None

    def event(self, job, kind: str, **detail) -> None:
        return None


def discard_lost(row, others: int = 0) -> None:
    """Remove a replacement that failed the invariant (damaged, or not decoding to what the
    catalog promises) and its temp leftover: it is nobody's copy of anything. Archiver created it
    at a name it had recorded and found free, so it is removed also when damaged, through
    ``files.remove_own`` (what is removed is what was taken and judged, never a file put there since).
    ``others``: how many other rows still name it (``duplicates.artifact_refs``): while any does,
    it stays (each of them finds it lost through the same gate)."""
    if row.compressed_path and not others:
        cp = Path(row.compressed_path)
        files.tmp_for(cp, row.id).unlink(missing_ok=True)
        files.remove_own(cp, row.id, None)


def writers_for(ctx):
    return DryWriters(ctx) if ctx.dry_run else RealWriters(ctx)

