"""One daemon per catalog: an exclusive ``flock`` on a lock file in the state directory.

``flock`` is released by the kernel when the process dies (even by kill -9), so a stale lock
file never blocks a restart; only a live holder does.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import CatalogError


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
            raise CatalogError(
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
    """For a PostgreSQL catalog: a session advisory lock held on a dedicated connection, so two
    daemons on *different hosts* sharing one catalog exclude each other too (flock is per host).
    The server drops it when the connection dies."""

    KEY = int.from_bytes(b"archvrd1", "big") & 0x7FFFFFFFFFFFFFFF

    def __init__(self, engine):
        self.engine = engine
        self._conn = None

    def acquire(self) -> "ServerCatalogLock":
        if self.engine.dialect.name != "postgresql":
            return self
        from sqlalchemy import text

        conn = self.engine.connect()
        got = conn.execute(text("select pg_try_advisory_lock(:k)"), {"k": self.KEY}).scalar()
        conn.commit()
        if not got:
            conn.close()
            raise CatalogError("another archiver daemon (possibly on another host) already serves this catalog")
        self._conn = conn
        return self

    def release(self) -> None:
        if self._conn is not None:
            try:
                from sqlalchemy import text

                self._conn.execute(text("select pg_advisory_unlock(:k)"), {"k": self.KEY})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
