"""The one invariant, in one place: an original is removed only after the stored artifact, read
back from disk, gives exactly what the catalog promises (the same bytes; or the same pixels and
metadata; or, for a lossy codec, the decoded image whose identity was recorded), the original is
still the very file that was archived and nobody is writing to it, and, for ``vault``, the vault
copy verifies. The dispose step and recovery both remove originals only through
``remove_original``; ``restore`` and ``verify`` use ``replacement_holds`` for the same check.

What "gives what the catalog promises" means is the codec's to say: ``replacement_holds`` asks
the row's codec (``Codecs.for_row(row).restore``, the same question the check step asked it with
``verify`` before the row was committed), after checking the file's SHA-256.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..catalog.models import ORIG_KEPT, ORIG_PRESENT, ORIG_REMOVED, FileVersion
from ..codecs import Recorded, Restored
from ..codecs.bound import Codecs
from ..errors import ArchiverError
from ..storage.atomic import is_utf8
from ..storage.vault import sha256_file
from . import faults, files


@dataclass
class Held:
    """Whether a row's artifact still gives what the catalog promises; ``restored`` is what it gives
    (``note``: a remark that is no failure, e.g. another device's decode within tolerance)."""

    ok: bool
    why: str = ""
    restored: Optional[Restored] = None
    note: str = ""
    #: the codec's own error, when it refused (restore re-raises it: e.g. exit 10, a missing adapter)
    error: Optional[ArchiverError] = None


def replacement_holds(row: FileVersion, codecs=None) -> Held:
    """Read the compressed file of ``row`` from disk and check it against the catalog."""
    if not row.compressed_path:
        return Held(False, "no compressed file recorded")
    cp = Path(row.compressed_path)
    try:
        disk = cp.read_bytes()
    except FileNotFoundError:
        return Held(False, f"compressed file missing: {cp}")
    except OSError as e:
        return Held(False, f"compressed file {cp} unreadable ({e.strerror})")
    if hashlib.sha256(disk).hexdigest() != row.compressed_sha256:
        return Held(False, f"compressed file damaged (SHA-256 mismatch): {cp}")
    try:
        got = (codecs or Codecs()).for_row(row).restore(disk, Recorded.from_row(row))
    except ArchiverError as e:
        return Held(False, f"compressed file does not give back what the catalog recorded ({e})", error=e)
    except Exception as e:  # noqa: BLE001 - a decoder crash on stored bytes is a finding, never a pass
        return Held(False, f"compressed file does not decode ({type(e).__name__}: {e})")
    return Held(True, restored=got, note=got.note)


#: why an original was not removed: it changed (a new version), someone is writing to it (try
#: again later), the replacement is lost or damaged (the version is not archived), no vault copy,
#: or it was taken and then its name was written again, so it is kept beside under another name
CHANGED, BUSY, LOST, NO_VAULT, KEPT_BESIDE = "changed", "busy", "lost", "no_vault", "kept_beside"


def why_not_remove(row: FileVersion, path: Path, ctx) -> tuple[str, str] | None:
    """The checks made before the original is taken, the slow ones included: ``path`` still
    looks like the archived file (size, mtime, inode), nobody writes to it, the replacement gives
    back what the catalog promises and the vault copy verifies. None when it may be taken."""
    if not files.looks_same(path, files.Identity.of_row(row)):
        return CHANGED, "the original changed after it was archived"
    if files.open_for_writing(path):
        return BUSY, "another process has the original open for writing"
    return _replacement_problem(row, ctx)


def _replacement_problem(row: FileVersion, ctx) -> tuple[str, str] | None:
    held = replacement_holds(row, ctx.codecs)
    if not held.ok:
        return LOST, f"the replacement does not give back what the catalog promises: {held.why}"
    if row.disposition == "vault" and not (ctx.vault and ctx.vault.check(row.sha256)):
        return NO_VAULT, "the vault copy is missing or damaged"
    return None


def remove_original(row: FileVersion, path: Path, ctx) -> tuple[str, str] | None:
    """Remove the original if and only if the invariant holds; returns (kind, why not), or None.

    The protocol (docs/safety.md): every slow check first (``why_not_remove``); then the original
    is taken out of the user's name in one atomic rename (``files.take``); then what was taken is
    compared with what was archived (inode, size, mtime, SHA-256, no writer). Only the taken file
    is ever removed, so a file written at the user's name at any moment is never touched. What
    fails the comparison goes back under its name, or beside it when that name was written again.
    A taken file left by a crash (it has the row's own private name) is finished the same way."""
    taken = files.taken_path(path, row.id)
    if os.path.lexists(taken):
        why = _replacement_problem(row, ctx)  # interrupted after taking: the replacement is checked again
    else:
        why = why_not_remove(row, path, ctx)
        if why is not None:
            return why
        faults.fault("taking")
        files.take(path, taken)
        faults.fault("taken")
    if why is None:
        differs = files.differs(taken, files.Identity.of_row(row))
        if differs is None:
            files.drop(taken)
            return None
        why = (BUSY if differs[0] == files.WRITTEN_TO else CHANGED), f"the original was not removed: {differs[1]}"
    where = files.give_back(taken, path, files.conflict_path(path, row.id))
    if where != path:
        return KEPT_BESIDE, f"{why[1]}; its name was written again meanwhile, so it is kept as {where}"
    return why


def row_problems(row: FileVersion, vault, codecs, now: dt.datetime, *, decode: bool) -> tuple[list[str], list[str]]:
    """What is wrong with a committed row's stored copies, as ``(problems, warnings)``: the
    compressed file (``decode``: through ``replacement_holds``, else its SHA-256 only), the vaulted
    original (a missing one past its expiry is a warning), a kept original; and an original removed
    with no verified copy left. ``verify`` reports them; ``forget`` refuses a row without problems."""
    bad, warn = [], []
    has_copy = False
    if not is_utf8(row.path):
        warn.append("the catalog path is not valid UTF-8 (written by another tool?); shown escaped")
    if row.compressed_path:
        cp = Path(row.compressed_path)
        if not decode:
            try:
                if not cp.is_file():
                    bad.append(f"compressed file missing: {cp}")
                elif sha256_file(cp) != row.compressed_sha256:
                    bad.append(f"compressed file damaged (SHA-256 mismatch): {cp}")
                else:
                    has_copy = True
            except OSError as e:
                bad.append(f"compressed file unreadable: {cp} ({e.strerror})")
        else:  # the very check the invariant's gate and a restore make, with nothing written
            held = replacement_holds(row, codecs)
            if held.ok:
                has_copy = True
                if held.note:
                    warn.append(held.note)
            else:
                bad.append(held.why)
    if row.vault_path:
        expired = row.vault_expires_at is not None and row.vault_expires_at <= now
        vp = Path(row.vault_path)
        if not vp.is_file():
            (warn if expired else bad).append(f"vaulted original {'expired and ' if expired else ''}missing: {vp}")
        elif sha256_file(vp) != row.sha256:
            bad.append(f"vaulted original damaged (SHA-256 mismatch): {vp}")
        else:
            has_copy = True
    if row.original_status in (ORIG_KEPT, ORIG_PRESENT):
        p = Path(row.path)
        if p.is_file() and sha256_file(p) == row.sha256:
            has_copy = True
        elif row.original_status == ORIG_PRESENT:
            bad.append("the catalog says the original is still present but it is not (run archive again to reconcile)")
        else:
            warn.append("kept original changed or removed outside archiver")
    if row.original_status == ORIG_REMOVED and not has_copy and not bad:
        bad.append("original removed and no verified copy left")
    return bad, warn
