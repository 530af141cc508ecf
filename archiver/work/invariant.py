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

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..catalog.models import FileVersion
from ..codecs import Recorded, Restored
from ..errors import ArchiverError
from . import files


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
    from .codec import Codecs

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
#: again later), the replacement is lost or damaged (the version is not archived), no vault copy
CHANGED, BUSY, LOST, NO_VAULT = "changed", "busy", "lost", "no_vault"


def why_not_remove(row: FileVersion, path: Path, ctx) -> tuple[str, str] | None:
    """None when the original at ``path`` may be removed now, else (kind, why not)."""
    if not files.same_file(path, row.size, row.mtime_ns, row.sha256):
        return CHANGED, "the original changed after it was archived"
    if files.open_for_writing(path):
        return BUSY, "another process has the original open for writing"
    held = replacement_holds(row, ctx.codecs)
    if not held.ok:
        return LOST, f"the replacement does not give back what the catalog promises: {held.why}"
    if row.disposition == "vault" and not (ctx.vault and ctx.vault.check(row.sha256)):
        return NO_VAULT, "the vault copy is missing or damaged"
    return None


def remove_original(row: FileVersion, path: Path, ctx) -> tuple[str, str] | None:
    """Remove the original if and only if the invariant holds; returns (kind, why not), or None."""
    why = why_not_remove(row, path, ctx)
    if why is None:
        files.unlink_durable(path)
    return why
