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

from pathlib import Path

from ..catalog import queries as q
from ..catalog.models import COMMITTED, FAILED, IN_PROGRESS, ORIG_KEPT, ORIG_PRESENT, ORIG_REMOVED
from ..storage.vault import sha256_file
from . import files, invariant
from .dispose import lost
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
                if cp.is_file():  # written by this row (its name was free and recorded first): ours
                    damaged = row.compressed_sha256 is not None and sha256_file(cp) != row.compressed_sha256
                    files.unlink_durable(cp)
                    note += f", removed {'damaged' if damaged else 'unfinished'} {cp.name}"
            q.transition(s, row, FAILED, kind="rollback", error=note, compressed_path=None,
                         compressed_sha256=None, compressed_size=None, reconstruction_sha256=None)
            return note
        if row.state == COMMITTED and row.original_status == ORIG_PRESENT and row.disposition in ("replace", "vault"):
            if not p.exists():
                q.transition(s, row, COMMITTED, kind="original_gone", original_status=ORIG_REMOVED)
                return "original already gone after commit; catalog updated"
            why = invariant.remove_original(row, p, ctx)
            if why is None:
                q.transition(s, row, COMMITTED, kind="original_removed", original_status=ORIG_REMOVED)
                return "finished removing the original after commit"
            kind, text = why
            if kind == invariant.CHANGED:
                # overwritten outside archiver: this version's original is no longer on disk (its
                # replacement is), and the new content is archived as a new version
                q.transition(s, row, COMMITTED, kind="original_changed", original_status=ORIG_REMOVED,
                             error="the original was overwritten after commit; the new content is a new version")
                return "original changed after commit; not removed"
            if kind == invariant.BUSY:
                return f"original not removed yet: {text}"
            if kind == invariant.NO_VAULT:
                q.transition(s, row, COMMITTED, kind="vault_missing", original_status=ORIG_KEPT,
                             error="vault copy missing at recovery; original kept")
                return "vault copy missing; original kept"
            lost(row, discard_lost, lambda **kw: q.transition(s, row, FAILED, **kw), text)
            return f"replacement lost before the original was removed; original kept ({text})"
    return None


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
