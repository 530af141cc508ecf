"""Where the original of a version whose stored copy is lost still is, and the command that gets it
back: ``verify`` says it beside the problem, ``forget`` refuses while the vault still holds it,
``restore`` says when it restored from the vault because the compressed file is gone, and vault
expiry keeps (and reports) such an original rather than delete its last copy."""

from __future__ import annotations

import datetime as dt
import hashlib
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from ..catalog.models import FileVersion
from ..storage.atomic import shown_name
from ..storage.vault import Vault, VaultError, sha256_file
from . import files


@dataclass
class Rescue:
    """``where`` the original still is (``vault`` or ``disk``), until when (vault), and ``command``:
    the next step; ``line`` says both in a sentence."""

    where: str
    command: str
    line: str
    until: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def artifact_problem(row: FileVersion) -> Optional[str]:
    """Why the row's compressed file does not hold (missing, unreadable, SHA-256 mismatch); None
    when it is there and hashes right, or when the row has none (nothing to lose)."""
    if not row.compressed_path:
        return None
    cp = Path(row.compressed_path)
    try:
        if not cp.is_file():
            return f"compressed file missing: {cp}"
        if row.compressed_sha256 and sha256_file(cp) != row.compressed_sha256:
            return f"compressed file damaged (SHA-256 mismatch): {cp}"
    except OSError as e:
        return f"compressed file unreadable: {cp} ({e.strerror})"
    return None


def vaults_for(row: FileVersion, vault: Vault | None) -> list[Vault]:
    """The vaults that may hold the row's original, in order: the one its ``vault_path`` names,
    then the configured ``vault``."""
    out = []
    if row.vault_path:
        try:
            out.append(Vault.holding(row.vault_path))
        except VaultError:
            pass
    if vault is not None:
        out.append(vault)
    return out


def vault_holding(row: FileVersion, vault: Vault | None) -> Optional[Vault]:
    """The vault that holds the row's original intact (SHA-256 checked): the one its
    ``vault_path`` names, else the configured ``vault``; None when neither does."""
    if not row.sha256:
        return None
    return next((v for v in vaults_for(row, vault) if v.check(row.sha256)), None)


def original_on_disk(row: FileVersion) -> bool:
    """Whether the very original (its SHA-256) is back at its path, read without following a link."""
    if not row.sha256:
        return False
    try:
        data, _ = files.read_original(Path(row.path))
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == row.sha256


def vault_until(row: FileVersion, vault: Vault) -> Optional[dt.datetime]:
    """When the vault copy's retention ends (the row's date, else the object's own); None: kept for ever."""
    if row.vault_expires_at is not None:
        return row.vault_expires_at
    meta = vault.meta(row.sha256) or {}
    return dt.datetime.fromisoformat(meta["expires_at"]) if meta.get("expires_at") else None


def when(t: Optional[dt.datetime]) -> str:
    return t.strftime("%Y-%m-%d") if t is not None else "no end date"


def rescue(row: FileVersion, vault: Vault | None, now: dt.datetime) -> Optional[Rescue]:
    """For a row with a problem: where its original still is and what to run; None when nowhere."""
    name = shlex.quote(shown_name(row.path))
    if original_on_disk(row):
        cmd = f"archiver forget {row.id} --reason '...'"
        return Rescue("disk", cmd, f"the original is intact at its path: `{cmd}` stops this report, and the next "
                                   "migrate (or the daemon) archives the file again")
    v = vault_holding(row, vault)
    if v is None:
        return None
    until = vault_until(row, v)
    cmd = f"archiver restore {name}"
    kept = (f"its retention ended on {when(until)}; it is kept because it is the last good copy"
            if until is not None and until <= now else f"until {when(until)}")
    return Rescue("vault", cmd, f"the original is still in the vault ({kept}): restore it with `{cmd}`",
                  until.isoformat() if until else None)
