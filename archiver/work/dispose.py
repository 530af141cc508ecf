"""Step 8, dispose: for ``replace``/``vault`` the original is removed through the invariant's
gate (``invariant.remove_original``): only if the replacement, read back from disk, still gives
what the catalog promises, the original is byte-identical to what was archived, nobody has it
open for writing, and the vault copy (if any) verifies. ``keep``: nothing happens."""

from __future__ import annotations

from ..catalog.models import COMMITTED, FAILED, ORIG_KEPT, ORIG_REMOVED
from . import faults, invariant
from .job import Job


class Dispose:
    name = "dispose"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, job: Job, w) -> None:
        if job.disposition not in ("replace", "vault"):
            return
        why = w.remove_original(job)
        if why is None:
            faults.fault("removed")
        record_removal(job.row, why, lambda state, **kw: w.record(job, state, **kw), w.discard_lost)


def record_removal(row, why: tuple[str, str] | None, record, discard) -> str:
    """Record what ``invariant.remove_original`` did with a committed row's original (``why`` None:
    removed) through ``record(state, **fields)``; returns a short note of it."""
    if why is None:
        record(COMMITTED, kind="original_removed", original_status=ORIG_REMOVED)
        return "original removed"
    kind, text = why
    if kind == invariant.CHANGED:  # this version's original is no longer on disk; the new content is a new version
        record(COMMITTED, kind="original_changed", original_status=ORIG_REMOVED,
               error=f"{text}; the new content is a new version")
        return "original changed; not removed"
    if kind == invariant.KEPT_BESIDE:
        record(COMMITTED, kind="original_kept_beside", original_status=ORIG_REMOVED, error=text)
        return text
    if kind == invariant.BUSY:  # committed, original present: the next run (recovery) tries again
        record(COMMITTED, kind="dispose_failed", error=f"original not removed yet: {text}")
        return f"original not removed yet: {text}"
    if kind == invariant.NO_VAULT:
        record(COMMITTED, kind="vault_missing", original_status=ORIG_KEPT, error=f"original kept: {text}")
        return f"original kept: {text}"
    lost(row, discard, lambda **kw: record(FAILED, **kw), text)
    return f"replacement lost before the original was removed; original kept ({text})"


def lost(row, discard, record, text: str) -> None:
    """The replacement is gone or damaged before the original was removed: this version is not
    archived after all (-> ``failed``, so it is tried again); the original stays untouched."""
    discard(row)
    record(kind="replacement_lost", error=f"original kept: {text}", original_status=None, compressed_path=None,
           compressed_sha256=None, compressed_size=None, reconstruction_sha256=None, vault_path=None)
