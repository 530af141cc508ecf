"""Catalog operations used by archive/restore/verify/stats, the service and the dashboard.

Every state change goes through ``transition``: it checks the move is allowed and appends an
``Event`` in the same transaction, so the state and its history never disagree.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from typing import Any, Iterable, Optional

from sqlalchemy import case, cast, delete, func, select, String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import CatalogError
from ..globs import glob_regex, is_glob
from .models import (COMMITTED, IN_PROGRESS, ORIG_KEPT, ORIG_PRESENT, TRANSITIONS, Event, FileVersion, SharedPlace, Tag,
                     utcnow)
from .models import FAILED, FORGOTTEN, SKIPPED, WorkQueue
from .models import WorkQueue

LEGAL_HOLD = "legal-hold"
#: the event ``verify`` records for a version whose stored data it found missing or damaged
VERIFY_FAILED = "verify_failed"


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


def preview_written_at(s: Session, path: str) -> FileVersion | None:
    """The newest row whose preview archiver wrote at ``path`` (with its SHA-256), if any."""
    return s.scalars(select(FileVersion).where(FileVersion.preview_path == path, FileVersion.preview_sha256.is_not(None))
                     .order_by(FileVersion.id.desc()).limit(1)).first()


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


def matches(row: FileVersion, rx) -> bool:
    """Whether a path glob's regex matches ``row``'s original path or the name of its archived
    file on disk (``photo.png.jxl``, ``*.avif``): a user may name either."""
    return bool(rx.search(row.path) or (row.compressed_path and rx.search(row.compressed_path)))


def find_for_restore(s: Session, target: str, *, as_of: dt.datetime | None = None) -> list[FileVersion]:
    """Committed versions matching a numeric id, an exact path (the original's, or its archived
    file's), a directory or a glob (on either name): the newest per path (committed at or before
    ``as_of`` when given)."""
    return _newest_matching(committed(s, as_of=as_of), target)


def find_forgotten_vaulted(s: Session, target: str, *, as_of: dt.datetime | None = None) -> list[FileVersion]:
    """Forgotten versions matching ``target`` (as ``find_for_restore``) that still name a vaulted
    original, the newest per path, for paths with no committed version: what ``restore`` can
    still get back from the vault after an ``archiver forget``."""
    q = select(FileVersion).where(FileVersion.state == FORGOTTEN, FileVersion.vault_path.is_not(None))
    if as_of is not None:
        q = q.where(FileVersion.committed_at <= as_of)
    rows = _newest_matching(list(s.scalars(q.order_by(FileVersion.id))), target)
    live = set(s.scalars(select(FileVersion.path).where(FileVersion.state == COMMITTED,
                                                          FileVersion.path.in_([r.path for r in rows]))))
    return [r for r in rows if r.path not in live]


def _newest_matching(rows: list[FileVersion], target: str) -> list[FileVersion]:
    exact = [r for r in rows if r.path == target]  # first: a name may contain [ ] * ? itself
    if not exact:
        exact = [r for r in rows if r.compressed_path == target]  # the name seen on disk: photo.png.jxl
        # exact copies share that file: the name on disk is the row that owns it, not its copies
        exact = [r for r in exact if r.artifact_of is None] or exact
    if exact:
        rows = exact
    elif target.isdigit():
        rows = [r for r in rows if r.id == int(target)]
    elif is_glob(target):  # the policy's glob meaning: '*' within a directory, '**' across
        rows = [r for r in rows if matches(r, glob_regex(target, ignore_case=False))]
    else:
        prefix = target.rstrip("/") + "/"  # a directory: everything archived under it
        rows = [r for r in rows if r.path.startswith(prefix)]
    newest: dict[str, FileVersion] = {}
    for r in rows:
        newest[r.path] = r  # ordered by id: the last one wins
    return list(newest.values())


def file_count(s: Session) -> int:
    """Catalog rows of any state (0: nothing was ever archived with this catalog)."""
    return int(s.scalar(select(func.count()).select_from(FileVersion)) or 0)


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


def newest_event(s: Session, fv: FileVersion) -> Event | None:
    return s.scalars(select(Event).where(Event.file_id == fv.id).order_by(Event.id.desc()).limit(1)).first()


def state_counts(s: Session) -> dict[str, int]:
    return dict(s.execute(select(FileVersion.state, func.count()).group_by(FileVersion.state)).all())


def paths_and_compressed(s: Session) -> list[tuple[str, str | None]]:
    return [tuple(r) for r in s.execute(select(FileVersion.path, FileVersion.compressed_path)).all()]


def vaulted(s: Session) -> list[FileVersion]:
    """Committed and forgotten versions that name a vaulted original (vault expiry looks at both)."""
    return list(s.scalars(select(FileVersion).where(FileVersion.vault_path.is_not(None),
                                                    FileVersion.state.in_((COMMITTED, FORGOTTEN)))
                          .order_by(FileVersion.id)))


def vaulted_with_sha(s: Session, shas: Iterable[str]) -> list[FileVersion]:
    return list(s.scalars(select(FileVersion).where(FileVersion.sha256.in_(list(shas)), FileVersion.vault_path.is_not(None))))


def savings(s: Session) -> dict:
    """Files and bytes before/after per policy rule and action (committed versions), summed in
    the database so it stays cheap on millions of rows. "After" is what stays on the source
    disk: the compressed file plus the original where it was kept."""
    F = FileVersion
    after = bytes_after()
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


# -- the dashboard (archiver/app/web) and other read-only views ------------------------------------
# Everything below only reads, sums in the database and pages by id, so it stays cheap on
# catalogs of millions of rows (see bench/web_overview.py).

def bytes_after():
    """What a committed row leaves on the source disk: its compressed file plus the original
    where it was kept (``savings``/``stats`` and the dashboard all use this one definition)."""
    F = FileVersion
    kept = F.original_status.in_((ORIG_KEPT, ORIG_PRESENT))
    return func.coalesce(F.compressed_size, 0) + case((kept, func.coalesce(F.size, 0)), else_=0)


def _group(key: str, files: int, before: int, after: int) -> dict:
    return {"key": key, "files": files, "bytes_before": before, "bytes_after": after, "saved_bytes": before - after,
            "saved_fraction": round((before - after) / before, 4) if before else 0.0}


def _ranked(acc: dict) -> list[dict]:
    out = [_group(k, *v) for k, v in acc.items()]
    out.sort(key=lambda g: (-g["saved_bytes"], g["key"]))
    return out


def committed_summary(s: Session) -> dict:
    """Committed files and bytes before/after per rule, per codec and per day of commit
    (cumulative, oldest first), from one pass over the covering index ix_file_versions_overview."""
    F = FileVersion
    day = func.date(F.committed_at)
    rows = s.execute(select(F.rule, F.codec, day, func.count(), func.sum(func.coalesce(F.size, 0)), func.sum(bytes_after()))
                     .where(F.state == COMMITTED).group_by(F.rule, F.codec, day)).all()
    by_rule: dict = {}
    by_codec: dict = {}
    by_day: dict = {}
    for rule, codec, d, n, before, after in rows:
        n, before, after = int(n), int(before or 0), int(after or 0)
        for acc, k in ((by_rule, rule or "-"), (by_codec, codec or "-"), (by_day, str(d)[:10] if d else None)):
            f, b, a = acc.get(k, (0, 0, 0))
            acc[k] = (f + n, b + before, a + after)
    over_time, files, before, after = [], 0, 0, 0
    for d in sorted(k for k in by_day if k):
        n, b, a = by_day[d]
        files, before, after = files + n, before + b, after + a
        over_time.append({"day": d, "files": files, "bytes_before": before, "bytes_after": after})
    return {"by_rule": _ranked(by_rule), "by_codec": _ranked(by_codec), "over_time": over_time}


def _position(s: Session, haystack, needle: str):
    """1-based position of ``needle`` in ``haystack`` (0 when absent), on SQLite and PostgreSQL."""
    fn = func.strpos if s.get_bind().dialect.name == "postgresql" else func.instr
    return fn(haystack, needle)


def top_folder(s: Session):
    """The first directory below the row's root ("." for files directly in the root)."""
    F = FileVersion
    rel = func.substr(F.path, func.length(func.coalesce(F.root, "")) + 2)
    slash = _position(s, rel, "/")
    return case((F.root.is_(None), "?"), (slash > 0, func.substr(rel, 1, slash - 1)), else_=".")


def savings_by_folder(s: Session) -> list[dict]:
    """Committed files and bytes before/after per root + first directory below it, biggest
    saving first (covering index ix_file_versions_folders)."""
    F = FileVersion
    folder = top_folder(s)
    rows = s.execute(select(F.root, folder, func.count(), func.sum(func.coalesce(F.size, 0)), func.sum(bytes_after()))
                     .where(F.state == COMMITTED).group_by(F.root, folder))
    acc = {}
    for root, top, n, before, after in rows:
        key = f"{root}/{top}" if root and top != "." else (root or "?")
        f, b, a = acc.get(key, (0, 0, 0))
        acc[key] = (f + int(n), b + int(before or 0), a + int(after or 0))
    return _ranked(acc)


def vault_schedule(s: Session, now: dt.datetime | None = None) -> dict:
    """Originals in the vault (per the catalog) and the days their retention ends (partial
    covering index ix_file_versions_vault)."""
    F = FileVersion
    now = now or utcnow()
    day = func.date(F.vault_expires_at)
    vaulted = F.vault_path.is_not(None)
    size = func.sum(func.coalesce(F.size, 0))
    frees = [{"day": str(d)[:10], "files": int(n), "bytes": int(b or 0)} for d, n, b in s.execute(
        select(day, func.count(), size).where(vaulted, F.vault_expires_at > now).group_by(day).order_by(day))]
    forever = s.execute(select(func.count(), size).where(vaulted, F.vault_expires_at.is_(None))).one()
    overdue = s.execute(select(func.count(), size).where(vaulted, F.vault_expires_at <= now)).one()
    kept = {"files": int(forever[0] or 0), "bytes": int(forever[1] or 0)}
    return {"files": sum(f["files"] for f in frees) + kept["files"], "bytes": sum(f["bytes"] for f in frees) + kept["bytes"],
            "frees": frees, "kept_forever": kept if kept["files"] else None,
            "past_retention": {"files": int(overdue[0] or 0), "bytes": int(overdue[1] or 0)}}


#: event kinds that mean something did not go as the policy asked, or that the archive lost
#: something: ``verify_failed`` (verify found the artifact missing or damaged) and a forget
PROBLEM_EVENTS = ("failed", "fallback", "bad_input", "skip", "rollback", "dispose_failed", "vault_missing",
                  "original_changed", "action_changed", VERIFY_FAILED, "forgotten", "forgotten_because")
#: how many problem events ``recent_problems`` reads at most to fill its rows (~3 ms on SQLite)
PROBLEM_SCAN = 500


def problem_label(kind: str, detail: dict) -> str:
    """What the dashboard calls a problem event: ``missing`` / ``damaged`` for a failed verify,
    ``forgotten`` for both events of a forget, else the event's kind."""
    if kind == VERIFY_FAILED:
        problems = " ".join(map(str, detail.get("problems") or []))
        return "missing" if "missing" in problems else "damaged"
    return "forgotten" if kind.startswith("forgotten") else kind


def _problem_why(kind: str, d: dict) -> str | None:
    if kind == VERIFY_FAILED:
        return "; ".join(map(str, d.get("problems") or [])) or None
    if kind == "forgotten_because":
        problems = "; ".join(map(str, d.get("problems") or []))
        return f"{d.get('reason') or 'archiver forget'}" + (f" (verify found: {problems})" if problems else "")
    reasons = d.get("reasons") or []
    return d.get("error") or next((r for r in reversed(reasons) if not str(r).startswith(FELL_BACK)), None)


def recent_problems(s: Session, limit: int = 20) -> list[dict]:
    """The newest problems, one row per file version, newest first: a codec that fell back writes
    two ``fallback`` events and a forget two events, and the file is listed once. A row has the
    newest event's time, id and ``kind`` (``problem_label``), every label seen for the file
    (``kinds``, newest first) and the first reason found, newest first. Reads at most
    ``PROBLEM_SCAN`` events."""
    q = (select(Event.id, Event.file_id, Event.path, Event.at, Event.kind, Event.to_state, Event.detail)
         .where(Event.kind.in_(PROBLEM_EVENTS)).order_by(Event.id.desc()).limit(PROBLEM_SCAN))
    rows: dict = {}
    for ev_id, file_id, path, at, kind, to_state, detail in s.execute(q):
        d = detail or {}
        key = file_id if file_id is not None else ("path", path)
        row = rows.get(key)
        if row is None:
            if len(rows) >= limit:
                continue  # only older events of files already listed can still add to a row
            row = rows[key] = {"id": ev_id, "file_id": file_id, "path": path, "at": at, "kind": problem_label(kind, d),
                               "event": kind, "kinds": [], "to_state": to_state, "action": d.get("action"), "why": None}
        label = problem_label(kind, d)
        if label not in row["kinds"]:
            row["kinds"].append(label)
        row["why"] = row["why"] or _problem_why(kind, d)
    return list(rows.values())


def queue_depth(s: Session) -> dict[str, int]:
    return {k: int(v) for k, v in s.execute(select(WorkQueue.state, func.count()).group_by(WorkQueue.state))}


def last_event_id(s: Session) -> int:
    """The newest event's id: every change to the catalog appends one, so it says whether
    anything changed since it was last read."""
    return int(s.scalars(select(func.max(Event.id))).first() or 0)


def last_event_at(s: Session) -> Optional[dt.datetime]:
    return s.scalars(select(Event.at).order_by(Event.id.desc()).limit(1)).first()


#: what the browser can filter on exactly (each has a (column, id) index)
BROWSE_FILTERS = ("rule", "codec", "state", "action")
#: the most rows one page may hold
MAX_PAGE = 500


def _browse_where(*, path: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
                  **exact: str | None) -> list:
    F = FileVersion
    where = []
    for k, v in exact.items():
        if k not in BROWSE_FILTERS:
            raise ValueError(f"browse: unknown filter {k!r}")
        if v:
            where.append(getattr(F, k) == v)
    if path:
        if path.startswith("/"):  # a directory or file prefix: an index range on path
            where.append(F.path.startswith(path, autoescape=True))
        else:  # a name fragment anywhere in the path (a scan, stopped by the page limit)
            where.append(F.path.contains(path, autoescape=True))
    if since is not None:
        where.append(F.updated_at >= since)
    if until is not None:
        where.append(F.updated_at < until)
    return where


def browse(s: Session, *, before_id: int | None = None, limit: int = 50, **filters) -> dict:
    """One page of file versions, newest first, matching ``filters`` (see ``_browse_where``).
    Keyset pagination: the next page starts below ``next_before``, so page 1000 costs what
    page 1 costs."""
    F = FileVersion
    limit = max(1, min(int(limit), MAX_PAGE))
    where = _browse_where(**filters)
    if before_id is not None:
        where.append(F.id < before_id)
    cols = (F.id, F.path, F.state, F.action, F.rule, F.codec, F.size, F.compressed_size, F.original_status,
            F.updated_at, F.error)
    rows = s.execute(select(*cols).where(*where).order_by(F.id.desc()).limit(limit + 1)).all()
    items = [dict(zip((c.key for c in cols), r)) for r in rows[:limit]]
    return {"items": items, "next_before": items[-1]["id"] if len(rows) > limit else None}


def browse_count(s: Session, cap: int = 10_000, **filters) -> tuple[int, bool]:
    """How many rows match (counting at most ``cap``: (count, more_than_cap))."""
    F = FileVersion
    inner = select(F.id).where(*_browse_where(**filters)).limit(cap + 1).subquery()
    n = int(s.execute(select(func.count()).select_from(inner)).scalar_one())
    return min(n, cap), n > cap


def distinct_values(s: Session, column: str, limit: int = 200) -> list[str]:
    """The values a filter column takes (for the browser's choices)."""
    if column not in BROWSE_FILTERS:
        raise ValueError(f"distinct_values: unknown column {column!r}")
    col = getattr(FileVersion, column)
    return [v for v in s.scalars(select(col).where(col.is_not(None)).distinct().order_by(col).limit(limit))]


def file_detail(s: Session, file_id: int) -> Optional[dict]:
    """One row with its events, tags and the other versions of the same path."""
    fv = s.get(FileVersion, file_id)
    if fv is None:
        return None
    others = s.execute(select(FileVersion.id, FileVersion.state, FileVersion.updated_at)
                       .where(FileVersion.path == fv.path, FileVersion.id != fv.id).order_by(FileVersion.id)).all()
    return {"file": fv.to_dict(), "events": [e.to_dict() for e in events_for(s, fv)], "tags": tags_for(s, fv.path),
            "versions": [{"id": i, "state": st, "updated_at": u} for i, st, u in others]}


# -- the operator's view: reasons, listings, one file ----------------------------------------
FELL_BACK = "fell back to "


def reason_kind(reason: str) -> str:
    """A reason without its measured value, for grouping ("protected-region PSNR 17.7dB below
    the floor 32.0dB" and "... 23.9dB below ..." are one kind)."""
    return re.sub(r"-?\d+(?:\.\d+)?\s*dB below", "below", reason)


def fallback_reason(reasons) -> str | None:
    """The reason a codec fell back (the entry before "fell back to ..."), or None."""
    reasons = list(reasons or [])
    for i, r in enumerate(reasons):
        if isinstance(r, str) and r.startswith(FELL_BACK) and i:
            return reasons[i - 1]
    return None


def fallback_counts(s: Session) -> list[dict]:
    """Committed versions whose codec fell back, grouped by the reason (files and bytes)."""
    F = FileVersion
    q = select(F.rule, F.reasons, F.size).where(F.state == COMMITTED, cast(F.reasons, String).like(f"%{FELL_BACK}%"))
    groups: dict[str, dict] = {}
    for rule, reasons, size in s.execute(q):
        why = reason_kind(fallback_reason(reasons) or "unknown")
        g = groups.setdefault(why, {"reason": why, "files": 0, "bytes_before": 0, "rules": set()})
        g["files"] += 1
        g["bytes_before"] += int(size or 0)
        g["rules"].add(rule or "-")
    out = sorted(groups.values(), key=lambda g: -g["files"])
    for g in out:
        g["rules"] = sorted(g["rules"])
    return out


def list_versions(s: Session, *, status: str | None = None, rule: str | None = None, codec: str | None = None,
                  action: str | None = None, pattern: str | None = None, since: dt.datetime | None = None,
                  until: dt.datetime | None = None, all_versions: bool = False, limit: int | None = None
                  ) -> list[FileVersion]:
    """Catalog entries for ``ls``: the newest version per path unless ``all_versions``; filters
    on state, rule, codec, action, a path glob (the policy's glob meaning) and update time."""
    F = FileVersion
    q = select(F)
    if not all_versions:
        newest = select(func.max(F.id)).group_by(F.path).scalar_subquery()
        q = q.where(F.id.in_(newest))
    if status:
        q = q.where(F.state == status)
    if rule:
        q = q.where(F.rule == rule)
    if codec:
        q = q.where(F.codec == codec)
    if action:
        q = q.where(F.action == action)
    if since:
        q = q.where(F.updated_at >= since)
    if until:
        q = q.where(F.updated_at <= until)
    q = q.order_by(F.path, F.id)
    rows = list(s.scalars(q))
    if pattern:
        rx = glob_regex(pattern, ignore_case=False)
        rows = [r for r in rows if matches(r, rx)]
    return rows[:limit] if limit else rows


def versions_for_target(s: Session, target: str) -> list[FileVersion]:
    """Every version of a path (or of a catalog id's path, or of the original an archived file
    such as ``photo.png.jxl`` stands for), oldest first."""
    if target.isdigit():
        r = s.get(FileVersion, int(target))
        return versions(s, r.path) if r else []
    found = versions(s, target)
    if not found:
        r = by_compressed_path(s, target)
        found = versions(s, r.path) if r else []
    return found


def by_compressed_path(s: Session, path: str) -> Optional[FileVersion]:
    """The newest row whose archived file is ``path`` (``photo.png.jxl``), if any: the row that owns
    it, not an exact copy sharing it (as ``find_for_restore`` reads a name on disk)."""
    return s.scalars(select(FileVersion).where(FileVersion.compressed_path == path)
                     .order_by(FileVersion.artifact_of.is_not(None), FileVersion.id.desc()).limit(1)).first()


def daemon_activity(s: Session, n_errors: int):
    """What ``archiver status`` shows of the daemon's work: queue counts by state, the claims in
    hand, files committed per window, the last errors and the files being retried."""
    now = utcnow()
    queue = dict(s.execute(select(WorkQueue.state, func.count()).group_by(WorkQueue.state)).all())
    in_hand = [{"path": p, "claimed_by": b, "since": a} for p, b, a in s.execute(
        select(WorkQueue.path, WorkQueue.claimed_by, WorkQueue.claimed_at)
        .where(WorkQueue.claimed_by.is_not(None), WorkQueue.state == "claimed").limit(50))]
    rates = {}
    for label, minutes in (("last_10_min", 10), ("last_hour", 60), ("last_day", 1440)):
        n, b = s.execute(select(func.count(), func.sum(func.coalesce(FileVersion.size, 0))).where(
            FileVersion.state == COMMITTED, FileVersion.committed_at >= now - dt.timedelta(minutes=minutes))).one()
        rates[label] = {"files": int(n), "bytes": int(b or 0), "files_per_min": round(n / minutes, 2)}
    errs = [{"path": p, "state": st, "error": e, "at": t} for p, st, e, t in s.execute(
        select(FileVersion.path, FileVersion.state, FileVersion.error, FileVersion.updated_at)
        .where(FileVersion.state.in_((FAILED, SKIPPED)), FileVersion.error.is_not(None))
        .order_by(FileVersion.updated_at.desc()).limit(n_errors))]
    retrying = [{"path": p, "attempts": a, "error": e} for p, a, e in s.execute(
        select(WorkQueue.path, WorkQueue.attempts, WorkQueue.last_error)
        .where(WorkQueue.last_error.is_not(None), WorkQueue.state != "done").limit(n_errors))]
    return queue, in_hand, rates, errs, retrying


def drop_queue_entry(s: Session, path: str) -> None:
    """Remove a path's work-queue entry, whatever its state."""
    s.execute(delete(WorkQueue).where(WorkQueue.path == path))


# -- the service's reads and records ----------------------------------------------------------
def handled_map(s: Session, root: str | None = None) -> dict[str, tuple[int | None, int | None, str]]:
    """path -> (size, mtime_ns, state) of the newest version, for the files under ``root``."""
    q = select(FileVersion.path, FileVersion.size, FileVersion.mtime_ns, FileVersion.state).order_by(FileVersion.id)
    if root:
        prefix = root.rstrip(os.sep) + os.sep
        q = q.where(FileVersion.path.startswith(prefix, autoescape=True))
    return {path: (size, mtime_ns, state) for path, size, mtime_ns, state in s.execute(q)}


def newest_stat(s: Session, path: str) -> tuple[int | None, int | None, str] | None:
    """(size, mtime_ns, state) of ``path``'s newest version, None when it has none."""
    q = (select(FileVersion.size, FileVersion.mtime_ns, FileVersion.state)
         .where(FileVersion.path == path).order_by(FileVersion.id.desc()).limit(1))
    rec = s.execute(q).first()
    return tuple(rec) if rec else None


def place_mark(s: Session, path: str) -> str | None:
    """The marker id recorded for a shared root or vault at ``path``."""
    return s.scalars(select(SharedPlace.mark).where(SharedPlace.path == path)).first()


def record_place(catalog, path: str, kind: str, mark: str, node: str) -> None:
    """Record ``mark`` for ``path`` unless another node was first (then nothing changes)."""
    try:
        with catalog.session() as s:
            s.add(SharedPlace(path=path, kind=kind, mark=mark, node=node))
            s.commit()
    except IntegrityError:
        pass
