"""One daemon per catalog on a host (the server catalog's own locks are in ``catalog.locks``).

One daemon per catalog on a host: an exclusive ``flock`` on a lock file in the state directory.

``flock`` is released by the kernel when the process dies (even by kill -9), so a stale lock
file never blocks a restart; only a live holder does.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

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


def lock_path_for(catalog_url: str, state_dir: Path) -> Path:
    """Beside a SQLite catalog file; otherwise (a server catalog) in the state directory,
    named after the URL so two catalogs on one host do not share a lock."""
    prefix = "sqlite:///"
    if catalog_url.startswith(prefix) and catalog_url[len(prefix):] not in ("", ":memory:"):
        db = Path(catalog_url[len(prefix):])
        return db.with_name(db.name + ".daemon.lock")
    digest = hashlib.sha256(catalog_url.encode()).hexdigest()[:12]
    return state_dir / f"daemon-{digest}.lock"
