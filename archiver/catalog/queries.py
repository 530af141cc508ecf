"""Catalog operations used by archive/restore/verify/stats (and the service).

Every state change goes through ``transition``: it checks the move is allowed and appends an
``Event`` in the same transaction, so the state and its history never disagree.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from typing import Any, Iterable, Optional

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ..errors import CatalogError
from .models import (COMMITTED, IN_PROGRESS, ORIG_KEPT, ORIG_PRESENT, TRANSITIONS, Event, FileVersion, Tag, utcnow)

LEGAL_HOLD = "legal-hold"


def add_event(s: Session, kind: str, *, fv: FileVersion | None = None, path: str | None = None,
              from_state: str | None = None, to_state: str | None = None, **detail: Any) -> Event:
    ev = Event(file=fv, path=path or (fv.path if fv else None), kind=kind, from_state=from_state,
               to_state=to_state, detail=_jsonable(detail) or None, at=utcnow())
    s.add(ev)
    return ev


def transition(s: Session, fv: FileVersion, to_state: str, kind: str | None = None, **fields: Any) -> FileVersion:
    """Move ``fv`` to ``to_state`` (setting ``fields``) and log it; refuses moves the state machine forbids."""
    old = fv.state if fv.id is not None else None
    if to_state not in TRANSITIONS.get(old, ()):
        raise CatalogError(f"{fv.path}: illegal state change {old} -> {to_state}")
    for k, v in fields.items():
        if not hasattr(FileVersion, k):
            raise AttributeError(k)
        setattr(fv, k, _jsonable(v))
    fv.state = to_state
    fv.updated_at = utcnow()
    if fv.id is None:
        s.add(fv)
        s.flush()
    detail = {k: v for k, v in fields.items() if k in ("error", "action", "rule", "reasons", "disposition")}
    add_event(s, kind or to_state, fv=fv, from_state=old, to_state=to_state, **detail)
    return fv


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and v != v:  # NaN is not JSON
        return None
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return None if v < 0 else 1e9
    if hasattr(v, "item") and callable(v.item):  # numpy scalars
        return v.item()
    return v


def latest_version(s: Session, path: str) -> Optional[FileVersion]:
    return s.scalars(select(FileVersion).where(FileVersion.path == path).order_by(FileVersion.id.desc()).limit(1)).first()


def versions(s: Session, path: str) -> list[FileVersion]:
    return list(s.scalars(select(FileVersion).where(FileVersion.path == path).order_by(FileVersion.id)))


def paths_to_recover(s: Session) -> set[str]:
    """Paths whose newest work was interrupted: rows in progress, or committed with the original
    still to be removed."""
    paths = set(s.scalars(select(FileVersion.path).where(FileVersion.state.in_(IN_PROGRESS))))
    paths |= set(s.scalars(select(FileVersion.path).where(FileVersion.state == COMMITTED,
                                                            FileVersion.original_status == ORIG_PRESENT)))
    return paths


def is_compressed_path(s: Session, path: str) -> bool:
    """Whether ``path`` is a compressed file some row points at."""
    return s.scalars(select(FileVersion.id).where(FileVersion.compressed_path == path).limit(1)).first() is not None


def in_progress(s: Session) -> list[FileVersion]:
    return list(s.scalars(select(FileVersion).where(FileVersion.state.in_(IN_PROGRESS)).order_by(FileVersion.id)))


def committed(s: Session, *, as_of: dt.datetime | None = None) -> list[FileVersion]:
    q = select(FileVersion).where(FileVersion.state == COMMITTED)
    if as_of is not None:
        q = q.where(FileVersion.committed_at <= as_of)
    return list(s.scalars(q.order_by(FileVersion.id)))


def find_for_restore(s: Session, target: str, *, as_of: dt.datetime | None = None) -> list[FileVersion]:
    """Committed versions matching a numeric id, an exact path, a directory or a glob: the newest
    per path (committed at or before ``as_of`` when given)."""
    rows = committed(s, as_of=as_of)
    if target.isdigit():
        rows = [r for r in rows if r.id == int(target)]
    elif any(ch in target for ch in "*?["):
        rows = [r for r in rows if fnmatch.fnmatchcase(r.path, target)]
    else:
        exact = [r for r in rows if r.path == target]
        prefix = target.rstrip("/") + "/"  # a directory: everything archived under it
        rows = exact or [r for r in rows if r.path.startswith(prefix)]
    newest: dict[str, FileVersion] = {}
    for r in rows:
        newest[r.path] = r  # ordered by id: the last one wins
    return list(newest.values())


def tags_for(s: Session, path: str) -> list[str]:
    return list(s.scalars(select(Tag.tag).where(Tag.path == path).order_by(Tag.tag)))


def add_tag(s: Session, path: str, tag: str) -> None:
    if tag not in tags_for(s, path):
        s.add(Tag(path=path, tag=tag))
        add_event(s, "tag_added", path=path, tag=tag)


def remove_tag(s: Session, path: str, tag: str) -> None:
    for t in s.scalars(select(Tag).where(Tag.path == path, Tag.tag == tag)):
        s.delete(t)
        add_event(s, "tag_removed", path=path, tag=tag)


def held_paths(s: Session, tags: Iterable[str] = (LEGAL_HOLD,)) -> set[str]:
    return set(s.scalars(select(Tag.path).where(Tag.tag.in_(list(tags)))))


def events_for(s: Session, fv: FileVersion) -> list[Event]:
    return list(s.scalars(select(Event).where(Event.file_id == fv.id).order_by(Event.id)))


def state_counts(s: Session) -> dict[str, int]:
    return dict(s.execute(select(FileVersion.state, func.count()).group_by(FileVersion.state)).all())


def paths_and_compressed(s: Session) -> list[tuple[str, str | None]]:
    return [tuple(r) for r in s.execute(select(FileVersion.path, FileVersion.compressed_path)).all()]


def vaulted_with_sha(s: Session, shas: Iterable[str]) -> list[FileVersion]:
    return list(s.scalars(select(FileVersion).where(FileVersion.sha256.in_(list(shas)), FileVersion.vault_path.is_not(None))))


def savings(s: Session) -> dict:
    """Files and bytes before/after per policy rule and action (committed versions), summed in
    the database so it stays cheap on millions of rows. "After" is what stays on the source
    disk: the compressed file plus the original where it was kept."""
    F = FileVersion
    kept = F.original_status.in_((ORIG_KEPT, ORIG_PRESENT))
    after = func.coalesce(F.compressed_size, 0) + case((kept, func.coalesce(F.size, 0)), else_=0)
    now = utcnow()
    vaulted = case((F.vault_path.is_not(None) & (F.vault_expires_at.is_(None) | (F.vault_expires_at > now)),
                    func.coalesce(F.size, 0)), else_=0)
    counts = state_counts(s)
    rows = s.execute(
        select(F.rule, F.action, func.count(), func.sum(func.coalesce(F.size, 0)), func.sum(after), func.sum(vaulted))
        .where(F.state == COMMITTED).group_by(F.rule, F.action).order_by(F.rule, F.action)).all()
    total = {"files": 0, "bytes_before": 0, "bytes_after": 0, "vault_bytes": 0}
    by = []
    for rule, action, n, before, aft, vb in rows:
        g = {"rule": rule or "-", "action": action or "-", "files": int(n), "bytes_before": int(before or 0),
             "bytes_after": int(aft or 0)}
        for k in ("files", "bytes_before", "bytes_after"):
            total[k] += g[k]
        total["vault_bytes"] += int(vb or 0)
        by.append(g)
    for g in by + [total]:
        g["saved_bytes"] = g["bytes_before"] - g["bytes_after"]
        g["saved_fraction"] = round(g["saved_bytes"] / g["bytes_before"], 4) if g["bytes_before"] else 0.0
    return {"states": counts, "total": total, "by_rule": by}
