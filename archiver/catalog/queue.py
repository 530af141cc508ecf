"""The persistent work queue, kept in the catalog so that a restart (or a crash) loses no work.

Rows live in the catalog's ``work_queue`` table (path unique, root, enqueued_at, not_before,
attempts, state pending|claimed|done|failed, claimed_by, claimed_at, last_error). This module
only adds the queue discipline on top:

- ``enqueue`` is idempotent (one row per path; a finished row is re-opened for a new version);
- ``claim`` is atomic without database-specific locking: a conditional UPDATE that only one
  claimer can win (works the same on SQLite and PostgreSQL, across processes and hosts);
- ``fail`` retries with exponential backoff and gives up after ``max_attempts``;
- ``requeue_stale`` returns claims of dead workers (same node: pid gone; another node: lease
  expired) to the queue, counting an attempt so a file that kills its worker cannot loop forever;
- ``renew`` is the live claimer's heartbeat: it moves ``claimed_at`` forward for the rows in
  hand, so a claim of a live worker on another node never goes stale however long the file takes.

A claimer is named ``node:pid:starttime[:tag]``. The node is the config's ``node_name`` (default:
the host name); two daemons sharing one catalog must have different node names, which the
daemon enforces (``lock.ServerCatalogLock``), because a pid means something only on its own node.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import sessionmaker

from .models import WorkQueue as QueueRow

PENDING, CLAIMED, DONE, FAILED = "pending", "claimed", "done", "failed"


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux), so a reused pid is not mistaken for it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def node_name(name: str | None = None) -> str:
    """This node's name in claims: the configured one, else the host name (no ':' allowed)."""
    return (name or socket.gethostname()).replace(":", "_")


def worker_id(tag: str = "", node: str | None = None) -> str:
    """``node:pid:starttime[:tag]`` — enough to tell whether a claimer on this node is alive."""
    pid = os.getpid()
    return f"{node_name(node)}:{pid}:{_start_time(pid) or 0}" + (f":{tag}" if tag else "")


def _pid_alive(pid: int, start: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start and start != "0":
        now = _start_time(pid)
        return now is None or now == start
    return True


def claimer_alive(claimed_by: str | None, node: str | None = None) -> bool | None:
    """True/False for a claimer on this node, None when it is elsewhere (use the lease)."""
    if not claimed_by:
        return False
    parts = claimed_by.split(":")
    if len(parts) < 2 or parts[0] != node_name(node):
        return None
    try:
        return _pid_alive(int(parts[1]), parts[2] if len(parts) > 2 else None)
    except ValueError:
        return None


@dataclass(frozen=True)
class Item:
    """A claimed queue row, detached from its session (safe to pass around and pickle)."""

    id: int
    path: str
    root: str | None
    attempts: int


def default_model():
    """The catalog's mapped class for ``work_queue``."""
    return QueueRow


class WorkQueue:
    def __init__(self, session_factory: Callable, model=None, *, max_attempts: int = 5,
                 backoff_seconds: float = 30.0, max_backoff_seconds: float = 3600.0,
                 lease_seconds: float = 300.0, clock: Callable[[], datetime] = utcnow, node: str | None = None):
        self.Session = session_factory
        self.M = model if model is not None else default_model()
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.lease_seconds = lease_seconds
        self.now = clock
        self.node = node_name(node)

    @classmethod
    def for_catalog(cls, catalog, **kw) -> "WorkQueue":
        """The queue of an open ``archiver.catalog.db.Catalog``."""
        return cls(sessionmaker(catalog.engine, expire_on_commit=False), default_model(), **kw)

    # -- producers -------------------------------------------------------------------------
    def enqueue(self, path: str, root: str | None = None, *, reopen: bool = True) -> bool:
        """Add ``path`` (idempotent). A done/failed row is re-opened when ``reopen`` (the caller
        saw a new version); pending/claimed rows are left alone. True if it is now newly pending."""
        return self.enqueue_many([(path, root)], reopen=reopen) == 1

    def enqueue_many(self, items: Iterable[tuple[str, str | None]], *, reopen: bool = True) -> int:
        M = self.M
        n = 0
        now = self.now()
        with self.Session() as s:
            for k, (path, root) in enumerate(items):
                if k and k % 500 == 0:
                    s.commit()  # short transactions: a big enqueue must not hold the writers off
                path = str(path)
                row = s.execute(select(M).where(M.path == path)).scalar_one_or_none()
                if row is None:
                    s.add(M(path=path, root=root, enqueued_at=now, not_before=now, attempts=0,
                            state=PENDING))
                    n += 1
                elif reopen and row.state in (DONE, FAILED):
                    row.state, row.attempts, row.not_before = PENDING, 0, now
                    row.enqueued_at, row.last_error = now, None
                    row.claimed_by = row.claimed_at = None
                    if root is not None:
                        row.root = root
                    n += 1
            s.commit()
        return n

    # -- consumers -------------------------------------------------------------------------
    def claim(self, worker: str, limit: int = 1, *, roots: Iterable[str] | None = None,
              exclude_roots: Iterable[str] = ()) -> list[Item]:
        """Atomically take up to ``limit`` due pending rows (oldest first)."""
        M = self.M
        now = self.now()
        q = select(M.id).where(M.state == PENDING, or_(M.not_before.is_(None), M.not_before <= now))
        if roots is not None:
            roots = list(roots)
            if not roots:
                return []
            q = q.where(M.root.in_(roots))
        exclude = list(exclude_roots)
        if exclude:
            q = q.where(or_(M.root.is_(None), M.root.not_in(exclude)))
        q = q.order_by(M.enqueued_at, M.id).limit(max(limit * 4, limit))
        out: list[Item] = []
        with self.Session() as s:
            for (rid,) in s.execute(q).all():
                res = s.execute(
                    update(M).where(M.id == rid, M.state == PENDING)
                    .values(state=CLAIMED, claimed_by=worker, claimed_at=now)
                    .execution_options(synchronize_session=False)
                )
                s.commit()
                if res.rowcount == 1:
                    row = s.get(M, rid)
                    out.append(Item(row.id, row.path, row.root, row.attempts or 0))
                    if len(out) >= limit:
                        break
        return out

    def renew(self, worker: str, item_ids: Iterable[int]) -> int:
        """Heartbeat: re-stamp ``worker``'s claims on ``item_ids``; returns how many it still holds
        (fewer means another node took a claim over after this one looked dead)."""
        ids = list(item_ids)
        if not ids:
            return 0
        M = self.M
        with self.Session() as s:
            res = s.execute(update(M).where(M.id.in_(ids), M.state == CLAIMED, M.claimed_by == worker)
                            .values(claimed_at=self.now()).execution_options(synchronize_session=False))
            s.commit()
            return int(res.rowcount or 0)

    def complete(self, item_id: int) -> None:
        self._set(item_id, state=DONE, claimed_by=None, claimed_at=None, last_error=None)

    def release(self, item_id: int) -> None:
        """Give a claimed row back untouched (shutdown before it was started): no attempt counted."""
        self._set(item_id, state=PENDING, claimed_by=None, claimed_at=None)

    def fail(self, item_id: int, error: str, *, retry: bool = True) -> str:
        """Count an attempt; back off and retry, or give up. Returns the new state."""
        M = self.M
        with self.Session() as s:
            row = s.get(M, item_id)
            if row is None:
                return FAILED
            row.attempts = (row.attempts or 0) + 1
            row.last_error = (error or "")[:2000]
            row.claimed_by = row.claimed_at = None
            if retry and row.attempts < self.max_attempts:
                delay = min(self.backoff_seconds * 2 ** (row.attempts - 1), self.max_backoff_seconds)
                row.state = PENDING
                row.not_before = self.now() + timedelta(seconds=delay)
            else:
                row.state = FAILED
            s.commit()
            return row.state

    def requeue_stale(self) -> int:
        """Return dead workers' claims to the queue, counting an attempt (a file that keeps
        killing its worker ends up failed instead of looping)."""
        M = self.M
        n = 0
        lease_cutoff = self.now() - timedelta(seconds=self.lease_seconds)
        with self.Session() as s:
            rows = s.execute(select(M).where(M.state == CLAIMED)).scalars().all()
            for row in rows:
                alive = claimer_alive(row.claimed_by, self.node)
                if alive is None:  # another node: only the lease (renewed while it works) tells
                    alive = row.claimed_at is not None and row.claimed_at > lease_cutoff
                if alive:
                    continue
                row.attempts = (row.attempts or 0) + 1
                row.last_error = f"claim by {row.claimed_by} abandoned (worker died or was killed)"
                row.claimed_by = row.claimed_at = None
                row.state = PENDING if row.attempts < self.max_attempts else FAILED
                row.not_before = self.now()
                n += 1
            s.commit()
        return n

    # -- inspection ------------------------------------------------------------------------
    def waiting_under(self, root: str) -> set[str]:
        """Paths under ``root`` that are pending or claimed (an interrupted run's leftovers)."""
        M = self.M
        prefix = root.rstrip(os.sep) + os.sep
        with self.Session() as s:
            return set(s.scalars(select(M.path).where(M.state.in_((PENDING, CLAIMED)),
                                                      M.path.startswith(prefix, autoescape=True))))

    def depth(self, roots: Iterable[str] | None = None) -> dict[str, int]:
        M = self.M
        q = select(M.state, func.count()).group_by(M.state)
        if roots is not None:
            q = q.where(M.root.in_(list(roots)))
        with self.Session() as s:
            counts = dict(s.execute(q).all())
        return {k: int(counts.get(k, 0)) for k in (PENDING, CLAIMED, DONE, FAILED)}

    def get(self, path: str):
        M = self.M
        with self.Session() as s:
            row = s.execute(select(M).where(M.path == str(path))).scalar_one_or_none()
            if row is None:
                return None
            return {c: getattr(row, c) for c in ("id", "path", "root", "state", "attempts", "last_error",
                                                  "claimed_by", "not_before")}

    def rows(self, *, state: str | None = None, roots: Iterable[str] | None = None) -> list[dict]:
        M = self.M
        q = select(M)
        if state:
            q = q.where(M.state == state)
        if roots is not None:
            q = q.where(M.root.in_(list(roots)))
        with self.Session() as s:
            return [{c: getattr(r, c) for c in ("id", "path", "root", "state", "attempts", "last_error", "claimed_by")}
                    for r in s.execute(q.order_by(M.id)).scalars()]

    def _set(self, item_id: int, **values) -> None:
        M = self.M
        with self.Session() as s:
            s.execute(update(M).where(M.id == item_id).values(**values)
                      .execution_options(synchronize_session=False))
            s.commit()
