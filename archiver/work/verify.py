"""Scrub: re-read, re-hash and re-decode what the catalog says is stored, and report every
mismatch (a damaged compressed file, a vaulted original gone early, a reconstruction that no
longer decodes to what was verified at encode time). Also ``stats`` and vault expiry."""

from __future__ import annotations

import datetime as dt
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..storage.vault import Vault, sha256_file
from ..catalog import queries as q
from ..catalog.db import Catalog
from ..catalog.models import COMMITTED, FORGOTTEN, FileVersion, utcnow
from ..codecs.bound import Codecs
from ..storage.atomic import is_private_name, shown_name, TAKEN_PREFIX
from .archive import COMPRESSED_EXTS
from .invariant import row_problems
from .forget import released as is_released
from .lost import original_on_disk, rescue, when


@dataclass
class VerifyReport:
    checked: int = 0
    total: int = 0
    ok: int = 0
    mismatches: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    #: vaulted originals past their retention kept because they are the last good copy (``expire_vault``)
    held: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def verify(catalog: Catalog, *, vault: Vault | None = None, codecs=None, sample: float = 1.0, seed: int | None = None,
           now: dt.datetime | None = None, decode: bool = True, progress=None, on_problem=None) -> VerifyReport:
    """Check every committed file (or a random ``sample`` of them). ``progress(rows)`` wraps the
    iteration (the caller draws it); ``on_problem(mismatch)`` hears each mismatch when it is found."""
    now = now or utcnow()
    with catalog.session() as s:
        rows = q.committed(s)
        stuck = q.in_progress(s)
    rep = VerifyReport(total=len(rows))
    if 0 < sample < 1:
        rng = random.Random(seed)
        rows = [r for r in rows if rng.random() < sample] or rows[:1]
    it = progress(rows) if progress else rows
    codecs = codecs or Codecs()
    found: dict[int, list[str]] = {}
    for row in it:
        rep.checked += 1
        try:
            bad, warn = row_problems(row, vault, codecs, now, decode=decode)
        except (OSError, ValueError) as e:  # one unreadable row is a finding, not the end of the scrub
            bad, warn = [f"cannot be checked: {type(e).__name__}: {e}"], []
        help_ = rescue(row, vault, now) if bad else None
        if bad:
            found[row.id] = bad
        for m in bad:
            rep.mismatches.append({"id": row.id, "path": shown_name(row.path), "problem": m,
                                   "rescue": help_.to_dict() if help_ else None})
            if on_problem is not None:
                on_problem(rep.mismatches[-1])
        for w in warn:
            rep.warnings.append({"id": row.id, "path": shown_name(row.path), "problem": w})
        if not bad:
            rep.ok += 1
    for r in stuck:
        rep.warnings.append({"id": r.id, "path": r.path, "problem": f"interrupted in state '{r.state}' (run archive again)"})
    if sample >= 1:
        rep.warnings.extend(_strays(catalog))
    _record_findings(catalog, found)
    return rep


def _record_findings(catalog: Catalog, found: dict[int, list[str]]) -> None:
    """A ``verify_failed`` event (with the problems) on each version found missing or damaged,
    so the dashboard lists it among the problems; not again while the version's newest event
    already says the same (a weekly verify does not grow the log with the same finding)."""
    if not found:
        return
    with catalog.session() as s:
        for file_id, problems in found.items():
            row = s.get(FileVersion, file_id)
            last = q.newest_event(s, row) if row is not None else None
            if row is None or (last is not None and last.kind == q.VERIFY_FAILED
                               and (last.detail or {}).get("problems") == problems):
                continue
            q.add_event(s, q.VERIFY_FAILED, fv=row, problems=problems)


def _strays(catalog: Catalog) -> list[dict]:
    """Files beside archived ones that look like archiver output but that the catalog does not
    know (leftovers of a crash nobody recovered yet, or copies made by hand): reported, not touched."""
    with catalog.session() as s:
        rows = q.paths_and_compressed(s)
    known = {c for _, c in rows if c}
    out = []
    for d in sorted({str(Path(p).parent) for p, _ in rows}):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue  # an unmounted root is not a finding about the catalog
        for n in names:
            f = os.path.join(d, n)
            if n.startswith(TAKEN_PREFIX):
                out.append({"id": None, "path": f, "problem": "an original taken for removal by an interrupted run "
                            "(archive or migrate of its folder finishes it: removed or given back)"})
            elif is_private_name(f) or (f not in known and _named_like_output(n, COMPRESSED_EXTS)):
                out.append({"id": None, "path": f, "problem": "archiver-like file unknown to the catalog"})
    return out


def _named_like_output(name: str, exts) -> bool:
    """Whether ``name`` is named as archive names its outputs: the original's whole name, then the
    codec's extension (``photo.jpg.jxl``, ``photo.jpg.<id>.avif``, a copy ``copy.jpg.jxl``); a
    user's own ``holiday.avif`` is a photo, not a stray."""
    stem, ext = os.path.splitext(name)
    return ext in exts and "." in stem.lstrip(".")


def stats(catalog: Catalog) -> dict:
    """Files and bytes before/after per policy rule and action (see ``queries.savings``)."""
    with catalog.session() as s:
        return q.savings(s)


def _replacement_intact(row: FileVersion) -> bool:
    if not row.compressed_path:
        return False
    cp = Path(row.compressed_path)
    return cp.is_file() and sha256_file(cp) == row.compressed_sha256


@dataclass
class VaultExpiry:
    """What one vault expiry did: the SHA-256s it deleted, and the originals past their retention
    it kept because they are the last good copy (each with id, path, sha256, expired_on, why)."""

    gone: list[str] = field(default_factory=list)
    held: list[dict] = field(default_factory=list)


def expire_vault(catalog: Catalog, vault: Vault, now: dt.datetime | None = None) -> VaultExpiry:
    """Delete vaulted originals past retention; never one under legal hold, and never the last
    good copy: one whose compressed replacement is missing or damaged, or one of a forgotten
    version that is not back on disk (unless ``forget --ignore-vault`` released it) is kept and
    reported in ``held``. The catalog rows lose their vault path with an event."""
    now = now or utcnow()
    held: list[dict] = []
    with catalog.session() as s:
        on_hold = q.held_paths(s)
        keep = set()
        for r in q.vaulted(s):
            due = r.vault_expires_at is not None and r.vault_expires_at <= now
            if r.path in on_hold or not due:
                keep.add(r.sha256)
                continue
            why = _last_copy(r)
            if why:
                keep.add(r.sha256)
                held.append({"id": r.id, "path": shown_name(r.path), "sha256": r.sha256,
                             "expired_on": when(r.vault_expires_at), "why": why})
    gone = vault.expire(now, keep=keep)
    if gone:
        with catalog.session() as s:
            for r in q.vaulted_with_sha(s, gone):
                if r.state in (COMMITTED, FORGOTTEN):
                    q.transition(s, r, r.state, kind="vault_expired", vault_path=None)
                else:
                    q.add_event(s, "vault_expired", fv=r, vault_path=r.vault_path)
    return VaultExpiry(gone, held)


def _last_copy(row: FileVersion) -> str | None:
    """Why ``row``'s vaulted original is its last good copy (None when it is not)."""
    if row.state == FORGOTTEN:
        if is_released(row) or original_on_disk(row) or _replacement_intact(row):
            return None
        return ("its version was forgotten and the original is not back on disk: the vault holds its only copy "
                f"(restore it with `archiver restore {row.id}`, or let it go: `archiver forget {row.id} --ignore-vault`)")
    if not _replacement_intact(row):
        return (f"its compressed file is missing or damaged: the vault holds its only copy "
                f"(restore it with `archiver restore {row.id}`)")
    return None
