"""``archiver forget``: tell the catalog that a file's archived data is gone for good.

Without it a lost output (a deleted .dlc, a disk that failed) makes ``verify`` fail on every run,
so a weekly verify timer alerts forever. The semantics, explicitly:

- It drops: the version from ``verify``, ``restore``, ``stats`` and the default ``ls`` listing
  (its state becomes ``forgotten``), and its pending queue entry. A file that appears at that
  path again is archived as a new version.
- It keeps, for audit: the catalog row itself (path, size, hashes, rule, reasons, codec, sizes,
  quality) and its whole event history, plus a ``forgotten`` event saying when, why, and what
  ``verify`` found missing at that moment. ``archiver show PATH`` still shows all of it.
- It never deletes or changes a file on disk (outputs, vault, originals): only the catalog.
- It refuses an entry whose data is still intact (``verify`` finds nothing wrong) unless
  ``--force``: forgetting a healthy archive would hide a restorable original.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from ..errors import NotInCatalogError
from ..catalog import duplicates as dup
from ..catalog import queries as q
from ..catalog.db import Catalog
from ..catalog.models import COMMITTED, FAILED, FORGOTTEN, SKIPPED, FileVersion, utcnow
from .invariant import row_problems


@dataclass
class Forgotten:
    id: int
    path: str
    status: str  # forgotten | refused
    problems: list[str]
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def forget(catalog: Catalog, targets: list[str], *, vault=None, reason: str | None = None,
           force: bool = False) -> list[Forgotten]:
    now = utcnow()
    out: list[Forgotten] = []
    with catalog.session() as s:
        rows: list[FileVersion] = []
        for t in targets:
            key = t if t.isdigit() or t.startswith("/") else os.path.abspath(t)
            found = [r for r in q.list_versions(s, pattern=key) if r.state in (COMMITTED, SKIPPED, FAILED)] \
                if any(ch in key for ch in "*?[") else \
                [r for r in q.versions_for_target(s, key) if r.state in (COMMITTED, SKIPPED, FAILED)]
            if not found:
                raise NotInCatalogError(f"{t}: nothing in the catalog to forget")
            rows.extend(found)
        for r in rows:
            bad, warn = row_problems(r, vault, None, now, decode=False) if r.state == COMMITTED else ([], [])
            if r.state == COMMITTED and not bad and not force:
                out.append(Forgotten(r.id, r.path, "refused", [],
                                     "its archived data is intact (verify finds nothing wrong); use --force to forget it anyway"))
                continue
            was = r.state
            q.transition(s, r, FORGOTTEN, kind="forgotten")
            heir = dup.hand_over(s, r)  # its stored file, shared by exact copies, stays theirs
            if heir is not None:
                q.add_event(s, "artifact_handed_over", fv=heir, compressed_path=r.compressed_path, was_of=r.id)
            q.add_event(s, "forgotten_because", fv=r, reason=reason or "archiver forget", was=was, problems=bad + warn,
                        compressed_path=r.compressed_path, vault_path=r.vault_path)
            q.drop_queue_entry(s, r.path)
            out.append(Forgotten(r.id, r.path, "forgotten", bad + warn))
    return out
