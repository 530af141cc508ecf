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
from ..catalog.models import COMMITTED, FileVersion, utcnow
from ..codecs.bound import Codecs
from ..storage.atomic import is_private_name, shown_name, TAKEN_PREFIX
from .archive import COMPRESSED_EXTS
from .invariant import row_problems


@dataclass
class VerifyReport:
    checked: int = 0
    total: int = 0
    ok: int = 0
    mismatches: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)

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
        if bad:
            found[row.id] = bad
        for m in bad:
            rep.mismatches.append({"id": row.id, "path": shown_name(row.path), "problem": m})
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


def expire_vault(catalog: Catalog, vault: Vault, now: dt.datetime | None = None) -> list[str]:
    """Delete vaulted originals past retention; never one under legal hold, and never the last
    good copy (a vaulted original whose compressed replacement is missing or damaged is kept).
    The catalog rows lose their vault path with an event. Returns the deleted SHA-256s."""
    now = now or utcnow()
    with catalog.session() as s:
        held = q.held_paths(s)
        keep = set()
        for r in q.committed(s):
            if not r.vault_path:
                continue
            if (r.path in held or r.vault_expires_at is None or r.vault_expires_at > now
                    or not _replacement_intact(r)):
                keep.add(r.sha256)
    gone = vault.expire(now, keep=keep)
    if gone:
        with catalog.session() as s:
            for r in q.vaulted_with_sha(s, gone):
                q.transition(s, r, COMMITTED, kind="vault_expired", vault_path=None)
    return gone
