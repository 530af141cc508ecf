"""Finishing or rolling back what an interrupted run left (a crash, a kill -9, a power cut).

- a row left in an in-progress state (discovered/classified/encoded/verified) is rolled back to
  ``failed``: the half-made compressed file (its name was recorded before writing) is removed
  only if it is the one written (by SHA-256 when known), and the file is processed again. The
  original was never touched before ``committed``.
- a ``committed`` row whose original is still present (crash between commit and removal) is
  finished through the same gate as the dispose step (``invariant.remove_original``): the
  replacement is read back and checked against the catalog, the original must be byte-identical
  and not open for writing, the vault copy (for ``vault``) must verify. A replacement that is
  gone or damaged by then turns the row ``failed`` and keeps the original, to be archived again.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..catalog import duplicates as dup
from ..catalog import queries as q
from ..catalog.models import COMMITTED, FAILED, IN_PROGRESS, ORIG_PRESENT, ORIG_REMOVED
from ..storage.vault import sha256_file
from . import files, invariant
from .dispose import record_removal
from .locks import path_lock
from .writers import discard_lost


def recover(p: Path, ctx) -> str | None:
    """Finish or roll back whatever an interrupted run left for this path (call under its lock);
    returns what was done, or None when there was nothing to do."""
    sp = str(p)
    with ctx.catalog.session() as s:
        row = q.latest_version(s, sp)
        if row is None:
            return None
        if row.state in IN_PROGRESS:
            note = f"interrupted at '{row.state}'; rolled back"
            if row.compressed_path:
                cp = Path(row.compressed_path)
                files.tmp_for(cp, row.id).unlink(missing_ok=True)
                _finish_taken_artifact(cp, row.id)
                if cp.is_file() and dup.artifact_refs(s, str(cp), excluding=row.id):
                    note += f", {cp.name} left: other rows still need it"
                elif cp.is_file():  # written by this row (its name was free and recorded first): ours
                    damaged = row.compressed_sha256 is not None and sha256_file(cp) != row.compressed_sha256
                    kept = files.remove_own(cp, row.id, None)
                    note += f", {kept}" if kept else f", removed {'damaged' if damaged else 'unfinished'} {cp.name}"
            q.transition(s, row, FAILED, kind="rollback", error=note, compressed_path=None,
                         compressed_sha256=None, compressed_size=None, reconstruction_sha256=None)
            return note
        if row.state == COMMITTED and row.original_status == ORIG_PRESENT and row.disposition in ("replace", "vault"):
            if not (os.path.lexists(p) or os.path.lexists(files.taken_path(p, row.id))):
                q.transition(s, row, COMMITTED, kind="original_gone", original_status=ORIG_REMOVED)
                return "original already gone after commit; catalog updated"
            why = invariant.remove_original(row, p, ctx)
            if why is not None and why[0] == invariant.BUSY:
                return f"original not removed yet: {why[1]}"  # tried again on the next run, no event each time
            note = record_removal(row, why, lambda state, **kw: q.transition(s, row, state, **kw),
                                  lambda r: discard_lost(r, dup.artifact_refs(s, r.compressed_path, excluding=r.id)))
            return "finished removing the original after commit" if why is None else note
    return None


def _finish_taken_artifact(cp: Path, file_id: int) -> None:
    """A compressed file of this row taken for removal when the run died: ours, dropped."""
    taken = files.taken_path(cp, file_id)
    if os.path.isfile(taken) and not os.path.islink(taken):
        files.drop(taken)


def recover_pending(ctx) -> list[tuple[str, str]]:
    """Finish or roll back every interrupted file in the catalog (run at daemon/migrate start,
    before new work): returns (path, what was done) pairs. Each path is recovered under its
    lock, so a run on this host that is busy with the file is waited for, not rolled back; with
    workers on other hosts, run it only while none are active."""
    with ctx.catalog.session() as s:
        paths = q.paths_to_recover(s)
    done = []
    for path in sorted(paths):
        with path_lock(ctx.lock_dir, path):  # never under the feet of a worker busy with this file
            note = recover(Path(path), ctx)
        if note:
            done.append((path, note))
    return done
