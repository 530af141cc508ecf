"""One daemon per catalog and node; one worker per file across nodes.

One daemon per catalog on a host: an exclusive ``flock`` on a lock file in the state directory.

``flock`` is released by the kernel when the process dies (even by kill -9), so a stale lock
file never blocks a restart; only a live holder does.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import LockedError


class InstanceLock:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> "InstanceLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise LockedError(
                f"another archiver daemon already serves this catalog{who}; lock file {self.path}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "InstanceLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(path: str | os.PathLike) -> int | None:
    """The pid holding the flock on ``path``, read from /proc/locks without touching the lock
    (probing by locking would make a daemon starting at that moment fail). None when nobody
    holds it, or where /proc/locks does not exist."""
    try:
        st = os.stat(path)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or parts[3] != "WRITE":
            continue
        try:
            pid = int(parts[4])
            major, minor, ino = parts[5].split(":")
            if (int(major, 16), int(minor, 16), int(ino)) == want:
                return pid
        except ValueError:
            continue
    return None


def server_locks_held(engine) -> int | None:
    """How many daemons (one per node name) hold their advisory lock on a PostgreSQL catalog
    (None on other databases); read from pg_locks, never by taking a lock."""
    if engine.dialect.name != "postgresql":
        return None
    from sqlalchemy import text

    with engine.connect() as conn:  # two-int4 advisory keys show as classid/objid with objsubid 2
        return int(conn.execute(text("select count(*) from pg_locks where locktype = 'advisory' and granted "
                                     "and classid = :ns and objsubid = 2"), {"ns": ServerCatalogLock.NAMESPACE}).scalar())


def lock_path_for(catalog_url: str, state_dir: Path) -> Path:
    """Beside a SQLite catalog file; otherwise (a server catalog) in the state directory,
    named after the URL so two catalogs on one host do not share a lock."""
    import hashlib

    prefix = "sqlite:///"
    if catalog_url.startswith(prefix) and catalog_url[len(prefix):] not in ("", ":memory:"):
        db = Path(catalog_url[len(prefix):])
        return db.with_name(db.name + ".daemon.lock")
    digest = hashlib.sha256(catalog_url.encode()).hexdigest()[:12]
    return state_dir / f"daemon-{digest}.lock"


class ServerCatalogLock:
    """For a PostgreSQL catalog: one daemon per *node name* (``node_name``, default the host name),
    enforced by a session advisory lock on a dedicated connection (the server drops it when the
    connection dies). Daemons on different nodes share the catalog and its queue; two with the
    same node name would misjudge each other's claims (a pid means something only on its own
    node), so the second is refused — on one host by the ``flock`` too, across hosts by this."""

    NAMESPACE = int.from_bytes(b"arcd", "big") & 0x7FFFFFFF

    def __init__(self, engine, node: str | None = None):
        from .queue import node_name

        self.engine = engine
        self.node = node_name(node)
        self._conn = None

    @property
    def key(self) -> int:
        import hashlib

        return int.from_bytes(hashlib.sha256(self.node.encode()).digest()[:4], "big") & 0x7FFFFFFF

    def acquire(self) -> "ServerCatalogLock":
        if self.engine.dialect.name != "postgresql":
            return self
        from sqlalchemy import text

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
                from sqlalchemy import text

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
    import hashlib

    from sqlalchemy import text

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
