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
- It refuses an entry whose compressed file is lost while the vault still holds its original
  (and the original is not back at its path) unless ``ignore_vault``: restore it first. With
  ``ignore_vault`` the vault copy is released: vault expiry deletes it when its retention ends
  (``ignore_vault`` on a version forgotten earlier releases its vault copy the same way).
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
from .lost import rescue


#: a forgotten version's ``params["forgotten"]["vault"]`` when its vault copy may expire (``--ignore-vault``)
RELEASED = "released"


def released(row: FileVersion) -> bool:
    """Whether a forgotten version's vaulted original was released to expire (``--ignore-vault``)."""
    return ((row.params or {}).get("forgotten") or {}).get("vault") == RELEASED


@dataclass
class Forgotten:
    id: int
    path: str
    status: str  # forgotten | refused | released (a forgotten version's vault copy, with ignore_vault)
    problems: list[str]
    message: str = ""
    #: for a refusal that has a way out: the command to run first (e.g. the restore from the vault)
    command: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def forget(catalog: Catalog, targets: list[str], *, vault=None, reason: str | None = None,
           force: bool = False, ignore_vault: bool = False) -> list[Forgotten]:
    now = utcnow()
    out: list[Forgotten] = []
    with catalog.session() as s:
        rows: list[FileVersion] = []
        # with ignore_vault, a version forgotten earlier whose vault copy expiry keeps can be released too
        states = (COMMITTED, SKIPPED, FAILED) + ((FORGOTTEN,) if ignore_vault else ())
        for t in targets:
            key = t if t.isdigit() or t.startswith("/") else os.path.abspath(t)
            found = [r for r in q.list_versions(s, pattern=key) if r.state in states] \
                if any(ch in key for ch in "*?[") else \
                [r for r in q.versions_for_target(s, key) if r.state in states]
            found = [r for r in found if r.state != FORGOTTEN or (r.vault_path and not released(r))]
            if not found:
                raise NotInCatalogError(f"{t}: nothing in the catalog to forget")
            rows.extend(found)
        for r in rows:
            if r.state == FORGOTTEN:
                q.transition(s, r, FORGOTTEN, kind="vault_released", params=dict(r.params or {}, forgotten={"vault": RELEASED}))
                q.add_event(s, "vault_released_because", fv=r, reason=reason or "archiver forget --ignore-vault")
                out.append(Forgotten(r.id, r.path, "released", [], "was forgotten; its vault copy is now deleted when its "
                                     f"retention ends ({r.vault_expires_at:%Y-%m-%d})" if r.vault_expires_at else
                                     "was forgotten; its vault copy is kept for ever (no retention end)"))
                continue
            bad, warn = row_problems(r, vault, None, now, decode=False) if r.state == COMMITTED else ([], [])
            if r.state == COMMITTED and not bad and not force:
                out.append(Forgotten(r.id, r.path, "refused", [],
                                     "its archived data is intact (verify finds nothing wrong); use --force to forget it anyway"))
                continue
            help_ = rescue(r, vault, now) if r.state == COMMITTED and bad else None
            vaulted = help_ is not None and help_.where == "vault"
            if vaulted and not ignore_vault:
                out.append(Forgotten(r.id, r.path, "refused", bad + warn,
                                     f"{help_.line}, then forget it; or use --ignore-vault to forget it anyway "
                                     "(the vault copy is then deleted when its retention ends)", help_.command))
                continue
            was = r.state
            extra = {}
            if vaulted or (r.vault_path and ignore_vault):
                extra["params"] = dict(r.params or {}, forgotten={"vault": RELEASED})
            q.transition(s, r, FORGOTTEN, kind="forgotten", **extra)
            heir = dup.hand_over(s, r)  # its stored file, shared by exact copies, stays theirs
            if heir is not None:
                q.add_event(s, "artifact_handed_over", fv=heir, compressed_path=r.compressed_path, was_of=r.id)
            q.add_event(s, "forgotten_because", fv=r, reason=reason or "archiver forget", was=was, problems=bad + warn,
                        compressed_path=r.compressed_path, vault_path=r.vault_path, ignore_vault=ignore_vault)
            q.drop_queue_entry(s, r.path)
            out.append(Forgotten(r.id, r.path, "forgotten", bad + warn,
                                 f"the vault copy is deleted when its retention ends ({help_.until[:10] if help_.until else 'never'})"
                                 if vaulted else ""))
    return out
