"""The catalog's own locks: one daemon per node name on a server catalog, and one worker per
file across nodes (session advisory locks on PostgreSQL; on SQLite the host's ``flock`` does it).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import text

from ..errors import LockedError
from .queue import node_name


def server_locks_held(engine) -> int | None:
    """How many daemons (one per node name) hold their advisory lock on a PostgreSQL catalog
    (None on other databases); read from pg_locks, never by taking a lock."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:  # two-int4 advisory keys show as classid/objid with objsubid 2
        return int(conn.execute(text("select count(*) from pg_locks where locktype = 'advisory' and granted "
                                     "and classid = :ns and objsubid = 2"), {"ns": ServerCatalogLock.NAMESPACE}).scalar())


class ServerCatalogLock:
    """For a PostgreSQL catalog: one daemon per *node name* (``node_name``, default the host name),
    enforced by a session advisory lock on a dedicated connection (the server drops it when the
    connection dies). Daemons on different nodes share the catalog and its queue; two with the
    same node name would misjudge each other's claims (a pid means something only on its own
    node), so the second is refused — on one host by the ``flock`` too, across hosts by this."""

    NAMESPACE = int.from_bytes(b"arcd", "big") & 0x7FFFFFFF

    def __init__(self, engine, node: str | None = None):
        self.engine = engine
        self.node = node_name(node)
        self._conn = None

    @property
    def key(self) -> int:
        return int.from_bytes(hashlib.sha256(self.node.encode()).digest()[:4], "big") & 0x7FFFFFFF

    def acquire(self) -> "ServerCatalogLock":
        if self.engine.dialect.name != "postgresql":
            return self
        conn = self.engine.connect()
        got = conn.execute(text("select pg_try_advisory_lock(:ns, :k)"), {"ns": self.NAMESPACE, "k": self.key}).scalar()
        conn.commit()
        if not got:
            conn.close()
            raise LockedError(f"another archiver daemon with node name {self.node!r} already serves this catalog "
                              "(give every node its own node_name)")
        self._conn = conn
        return self

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("select pg_advisory_unlock(:ns, :k)"), {"ns": self.NAMESPACE, "k": self.key})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None


@contextmanager
def catalog_path_lock(engine, path: str) -> Iterator[bool]:
    """Across nodes, one worker per file at a time: on PostgreSQL a session advisory lock keyed
    by the path, held on its own connection for the whole unit of work (``archive_file``'s
    ``flock`` covers one host only). Yields False when another node holds it. The server drops
    the lock when the holder's connection dies, so a killed worker never leaves it behind. On
    SQLite (one host) it yields True and the ``flock`` does the work."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big") & 0x7FFFFFFF
    conn = engine.connect()
    try:
        got = bool(conn.execute(text("select pg_try_advisory_lock(:ns, :k)"), {"ns": PATH_NAMESPACE, "k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("select pg_advisory_unlock(:ns, :k)"), {"ns": PATH_NAMESPACE, "k": key})
                conn.commit()
    finally:
        conn.close()


PATH_NAMESPACE = int.from_bytes(b"arcp", "big") & 0x7FFFFFFF
