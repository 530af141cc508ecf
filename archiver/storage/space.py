"""Free space: checked before work starts, so that a migration or the daemon refuses with one
clear line instead of failing half-way with ENOSPC."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..text import human_bytes

#: never start (or go on) with less than this free on a filesystem archiver writes to
MIN_FREE_BYTES = 1 << 30
#: ... or less than this share of it
MIN_FREE_FRACTION = 0.02


def existing_parent(path: str | Path) -> Path:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | Path) -> tuple[int, int]:
    """(free, total) bytes of the filesystem holding ``path`` (or its nearest existing parent)."""
    u = shutil.disk_usage(existing_parent(path))
    return u.free, u.total


def low_space(paths, need_bytes: int = 0, *, min_free: int | None = None) -> list[str]:
    """One line per filesystem among ``paths`` that has too little room: less than ``need_bytes``
    plus the reserve (``MIN_FREE_BYTES``, at least ``MIN_FREE_FRACTION`` of the disk). Each
    filesystem is checked once, however many of the paths live on it."""
    seen: set[int] = set()
    problems = []
    for p in paths:
        if p is None:
            continue
        base = existing_parent(p)
        try:
            dev = os.stat(base).st_dev
            free, total = free_bytes(base)
        except OSError:
            continue
        if dev in seen:
            continue
        seen.add(dev)
        reserve = min_free if min_free is not None else max(MIN_FREE_BYTES if total > 20 * MIN_FREE_BYTES else 0,
                                                            int(total * MIN_FREE_FRACTION))
        if free < need_bytes + reserve:
            problems.append(f"{p}: only {human_bytes(free)} free of {human_bytes(total)}; need "
                            f"{human_bytes(need_bytes)} + a reserve of {human_bytes(reserve)}")
    return problems
