"""Settle window: a file is handed on only once it has stopped changing.

Watch events say *something* happened, not that a writer is finished. A path is ready only when
its (size, mtime) signature has been seen unchanged for ``settle_seconds`` of our own clock and
its mtime is at least that old. There is deliberately no "give up and queue it anyway" timeout:
a file that keeps changing is never handed on, so a half-written file is never encoded.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Seen:
    sig: tuple[int, int]
    since: float  # our clock when this signature was first observed


class SettleTracker:
    """Thread-safe: the watcher thread calls :meth:`touch`, the main loop calls :meth:`ready`."""

    def __init__(self, settle_seconds: float, *, clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time):
        self.settle_seconds = float(settle_seconds)
        self._clock = clock
        self._wall = wallclock
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen | None] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def touch(self, path: str) -> None:
        """Something happened to ``path``: track it (its signature decides when it settles)."""
        with self._lock:
            self._seen.setdefault(str(path), None)

    def forget(self, path: str) -> None:
        with self._lock:
            self._seen.pop(str(path), None)

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._seen)

    def ready(self) -> list[str]:
        """Stat every tracked path; return (and stop tracking) those that have settled.
        Paths that vanished or are not regular files are dropped."""
        now = self._clock()
        wall = self._wall()
        out: list[str] = []
        with self._lock:
            # only new entries and those whose window has elapsed need a stat (cheap with many files)
            items = [(p, s) for p, s in self._seen.items() if s is None or now - s.since >= self.settle_seconds]
        for path, seen in items:
            try:
                st = os.lstat(path)  # a symlink is not a file we archive
            except OSError:
                self.forget(path)
                continue
            if not _is_regular(st.st_mode):
                self.forget(path)
                continue
            sig = (st.st_size, st.st_mtime_ns)
            with self._lock:
                if path not in self._seen:
                    continue
                cur = self._seen[path]
                if cur is None or cur.sig != sig:
                    self._seen[path] = _Seen(sig, now)
                    continue
                old_enough = wall - st.st_mtime_ns / 1e9 >= self.settle_seconds
                if now - cur.since >= self.settle_seconds and old_enough:
                    del self._seen[path]
                    out.append(path)
        return out


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)
