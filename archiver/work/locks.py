"""One file is handled by one process at a time on this host: an exclusive ``flock`` on one of
4096 striped lock files. Across hosts the service's queue claims play this role."""

from __future__ import annotations

import fcntl
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def path_lock(lock_dir: str | Path | None, path: str):
    """Hold the lock for ``path`` (no-op without a lock directory)."""
    if lock_dir is None:
        yield
        return
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    name = hashlib.sha1(os.fsencode(path)).hexdigest()[:3]
    fd = os.open(Path(lock_dir) / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
