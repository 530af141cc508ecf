"""Settle window: a file is handed on only once it has stopped changing.

Watch events say *something* happened, not that a writer is finished. A path is ready only when
its (size, mtime) signature has been seen unchanged for ``settle_seconds`` of our own clock and
its mtime is at least that old. There is deliberately no "give up and queue it anyway" timeout:
a file that keeps changing is never handed on, so a half-written file is never encoded.
"""

from __future__ import annotations

import logging
import os
import stat
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
        #: also hold back files some process has open for writing (Linux /proc; other users'
        #: processes are visible only with CAP_SYS_PTRACE, which the shipped systemd unit grants;
        #: without it a warning says how many processes could not be checked)
        self.check_open_writers = True

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
                    out.append(path)
        if out and self.check_open_writers:
            busy = open_for_writing(out)
            for path in busy:  # a writer that merely paused longer than the window: wait on
                with self._lock:
                    if self._seen.get(path) is not None:
                        self._seen[path].since = now
            out = [p for p in out if p not in busy]
        with self._lock:
            for path in out:
                self._seen.pop(path, None)
        return out


def open_for_writing(paths) -> set[str]:
    """The subset of ``paths`` that a process (visible to us) holds open with write access.

    One sweep over /proc/*/fd per call (tens of ms on a busy host), done only when files are
    about to be released. Where /proc is unavailable this returns an empty set: the settle
    window alone then decides."""
    wanted = {os.path.realpath(p): p for p in paths}
    busy: set[str] = set()
    try:
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return busy
    hidden = 0
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            hidden += 1  # another user's process, and we lack CAP_SYS_PTRACE
            continue
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except PermissionError:  # listed (CAP_DAC_READ_SEARCH) but not readable without CAP_SYS_PTRACE
                hidden += 1
                break
            except OSError:
                continue
            if target in wanted:
                try:
                    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                        flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
                except (OSError, StopIteration, ValueError):
                    flags = os.O_WRONLY  # cannot tell: assume the worst
                if flags & (os.O_WRONLY | os.O_RDWR):
                    busy.add(wanted[target])
    _note_hidden(hidden)
    return busy


#: processes whose open files the last sweep could not see (0 = it saw every writer)
hidden_processes = 0
_hidden_warned = False


CAP_SYS_PTRACE = 19


def has_capability(bit: int) -> bool:
    """Whether this process holds a capability (its effective set, /proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return False
    return bool(eff >> bit & 1)


def _note_hidden(n: int) -> None:
    """Remember how many processes the sweep could not inspect; warn once when that is because
    we lack CAP_SYS_PTRACE (with it, only processes in other user namespaces, e.g. sandboxed
    browsers, stay hidden, and nothing can be done about those)."""
    global hidden_processes, _hidden_warned
    hidden_processes = n
    if n and not _hidden_warned and not has_capability(CAP_SYS_PTRACE):
        _hidden_warned = True
        logging.getLogger("archiver.settle").warning(
            "cannot see the open files of %d process(es) of other users: a file they are still writing is "
            "held back only by the settle window; grant CAP_SYS_PTRACE (see docs/operations.md, systemd)", n,
            extra={"hidden_processes": n})


def writer_visibility() -> int:
    """How many running processes' open files this process cannot inspect (for ``doctor``)."""
    open_for_writing([])
    return hidden_processes


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)
