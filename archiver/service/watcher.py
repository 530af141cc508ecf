"""Filesystem watching: watchdog's inotify observer for local roots, polling for network mounts.

The watcher only *notices* candidates and hands them to the settle tracker; deciding is left to
the settle window and the unit of work. Deletions are ignored on purpose: a vanished file (or a
whole root that got unmounted) must never be treated as a deletion to record.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from .. import imageio
from ..preview import is_preview
from ..storage.atomic import is_temp_name, is_utf8, shown_name

log = logging.getLogger("archiver.service.watcher")

#: archiver's own outputs (compressed files, vault copies) are never inputs
OUTPUT_SUFFIXES = (".dlc", ".jxl", ".axl")
#: what a collection may hold that is worth looking at; anything else is not an image we handle
IMAGE_SUFFIXES = imageio.IMAGE_SUFFIXES
#: a file still being written by a downloader or an editor
UNFINISHED_SUFFIXES = (".part", ".tmp", ".crdownload", "~")
#: compressed formats archiver writes itself (``photo.jpg.avif``); a user's own is left as it is
MODERN_SUFFIXES = (".avif", ".jxl")

#: ``why_not_taken``'s answer for archiver's own files and hidden ones: skipped, and not reported
OURS = ""

_WARNED: set[str] = set()


def why_not_taken(path: str | os.PathLike) -> str | None:
    """None for a path worth considering (an image name, not a temp file, not hidden, not our
    output); else why it is not taken: ``OURS`` (archiver's own files, hidden files: not worth a
    word) or a reason a user reads in the run's "not taken" list."""
    p = Path(path)
    name = p.name
    if not name or name.startswith(".") or is_temp_name(p) or is_preview(name):
        return OURS
    low = name.lower()
    stem, ext = os.path.splitext(low)
    if low.endswith(IMAGE_SUFFIXES) and not is_utf8(str(path)):
        # the catalog stores text: such a name cannot be recorded (archive_file says so); the
        # scanners skip it with one warning instead of failing on every scan
        if str(path) not in _WARNED and len(_WARNED) < 10_000:
            _WARNED.add(str(path))
            logging.getLogger("archiver.service.watcher").warning(
                "file name is not valid UTF-8; left untouched (rename it to archive it)",
                extra={"path": shown_name(str(path))})
        return "file name is not valid UTF-8 (rename it to archive it)"
    if low.endswith(UNFINISHED_SUFFIXES):
        return "unfinished download or temporary file"
    if ext in OUTPUT_SUFFIXES + MODERN_SUFFIXES:
        if ext in (".dlc", ".axl") or "." in stem.lstrip("."):
            return OURS  # named as archive names its outputs: photo.jpg.jxl, photo.jpg.<id>.avif
        return "already AVIF/JPEG XL (a modern compressed format): left as it is"
    if low.endswith(IMAGE_SUFFIXES):
        return None
    kind = (mimetypes.guess_type(low)[0] or "").split("/")[0]
    if kind == "image":
        return "an image type archiver does not read"
    if kind in ("video", "audio"):
        return f"{kind}, not an image"
    return "not an image"


def is_candidate(path: str | os.PathLike) -> bool:
    """A path worth considering (``why_not_taken`` is None)."""
    return why_not_taken(path) is None


def walk(root: str | os.PathLike, exclude: tuple[str, ...] = (),
         not_taken: list[tuple[str, str]] | None = None) -> Iterator[str]:
    """Every candidate file under ``root`` (hidden directories and ``exclude`` skipped, symlinks
    not followed). ``not_taken``: gets (path, reason) of each other regular file a user would
    miss (archiver's own and hidden files are not listed)."""
    exclude = tuple(os.path.abspath(x) for x in exclude)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.abspath(os.path.join(dirpath, d)) not in exclude)
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            why = why_not_taken(full)
            if not (os.path.isfile(full) and not os.path.islink(full)):
                continue
            if why is None:
                yield full
            elif why and not_taken is not None:
                not_taken.append((full, why))


class _Handler(FileSystemEventHandler):
    def __init__(self, on_path: Callable[[str], None]):
        self._on_path = on_path

    def _maybe(self, path: str | bytes) -> None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if is_candidate(path):
            self._on_path(path)

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._maybe(event.src_path)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._maybe(event.src_path)

    def on_closed(self, event: FileSystemEvent) -> None:
        self._maybe(event.src_path)

    def on_moved(self, event: FileSystemEvent) -> None:
        # moved into place (e.g. a downloader's rename, or a whole directory moved in)
        dest = event.dest_path
        if event.is_directory:
            for p in walk(os.fsdecode(dest)):
                self._on_path(p)
        else:
            self._maybe(dest)


class Watcher:
    """One observer per kind; roots can be (re)scheduled while running (SIGHUP, a root coming back)."""

    def __init__(self, on_path: Callable[[str], None], *, poll_interval: float = 5.0):
        self._handler = _Handler(on_path)
        self._inotify = Observer()
        self._polling = PollingObserver(timeout=poll_interval)
        self._watches: dict[str, object] = {}
        self._kind: dict[str, bool] = {}  # root -> watched by polling
        self._started = False

    def start(self) -> None:
        self._inotify.start()
        self._polling.start()
        self._started = True

    def watched(self) -> set[str]:
        return set(self._watches)

    def add(self, root: str, *, polling: bool = False) -> bool:
        """Watch ``root`` recursively; False (and nothing scheduled) if it cannot be watched now."""
        if root in self._watches:
            return True
        obs = self._polling if polling else self._inotify
        try:
            self._watches[root] = obs.schedule(self._handler, root, recursive=True)
            self._kind[root] = polling
        except OSError as e:
            if polling or not os.path.isdir(root):
                log.warning("cannot watch root", extra={"root": root, "error": str(e)})
                return False
            # e.g. ENOSPC: fs.inotify.max_user_watches exhausted by a huge tree; polling still works
            log.warning("inotify failed; polling this root instead (raise fs.inotify.max_user_watches)",
                        extra={"root": root, "error": str(e)})
            self._watches[root] = self._polling.schedule(self._handler, root, recursive=True)
            self._kind[root] = False  # configured as inotify: do not flip-flop on every check
        return True

    def remove(self, root: str) -> None:
        w = self._watches.pop(root, None)
        self._kind.pop(root, None)
        if w is None:
            return
        for obs in (self._inotify, self._polling):
            try:
                obs.unschedule(w)
            except (KeyError, OSError):
                continue

    def set_roots(self, roots: Iterable[str], poll_roots: Iterable[str], available: Callable[[str], bool]) -> None:
        """Bring the scheduled watches in line with the configured and currently available roots."""
        wanted = {r: False for r in roots}
        wanted.update({r: True for r in poll_roots})
        for r in list(self._watches):
            if r not in wanted or not available(r) or self._kind.get(r) != wanted[r]:
                self.remove(r)
        for r, polling in wanted.items():
            if r not in self._watches and available(r):
                self.add(r, polling=polling)

    def stop(self) -> None:
        if not self._started:
            return
        for obs in (self._inotify, self._polling):
            obs.stop()
        for obs in (self._inotify, self._polling):
            obs.join(timeout=10)
        self._started = False
