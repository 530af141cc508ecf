"""The dashboard's picture cache: PNG conversions of originals a browser cannot show and decoded
reconstructions, under ``web.cache_dir`` as ``ab/<key>.png`` (the key is the content's SHA-256),
and the grid's JPEG thumbnails (``ab/<key>.jpg``).

Capped at ``web.cache_max_bytes`` (default 256 MiB; 0 = nothing is cached), least recently used
out first. A hit sets the file's mtime to now (atime is unreliable under ``noatime``/``relatime``),
so the order survives restarts and is the same for every process serving the folder (``serve``
and a daemon's dashboard). The bytes held are counted in memory and counted again from the folder
at least every ``RESCAN_S`` seconds (other processes write too); when a write takes them over the
cap, the folder is scanned and the files used longest ago are removed until it holds at most
``LOW_WATER`` of the cap. A cache that cannot be read or written (a full disk, a read-only folder)
is logged and the picture is served all the same: it is only a cache.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from ...storage import atomic

log = logging.getLogger("archiver.web")

#: 256 MiB: a few hundred full-size pictures
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: eviction goes down to this share of the cap, so that the next writes do not each scan again
LOW_WATER = 0.9
#: the in-memory count of bytes is taken again from the folder at least this often
RESCAN_S = 60.0
#: a cache that cannot be written is logged at most this often
WARN_EVERY_S = 300.0


def _files(root: Path) -> list[tuple[float, int, str]]:
    """(mtime, size, path) of every file below ``root`` (also temporary leftovers of a crash)."""
    out = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out.append((st.st_mtime, st.st_size, p))
    return out


class PictureCache:
    """``get(key)`` / ``put(key, data)`` under ``root``, at most ``max_bytes`` in all (thread-safe)."""

    def __init__(self, root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._bytes: int | None = None  # None: not counted yet
        self._counted_at = 0.0
        self._warned_at: float | None = None

    def path(self, key: str, suffix: str = ".png") -> Path:
        return self.root / key[:2] / f"{key}{suffix}"

    def get(self, key: str, suffix: str = ".png") -> bytes | None:
        """The cached bytes (and the entry becomes the most recently used), or None."""
        p = self.path(key, suffix)
        try:
            data = p.read_bytes()
        except OSError:
            return None
        try:
            os.utime(p)
        except OSError:
            pass
        return data

    def put(self, key: str, data: bytes, suffix: str = ".png") -> bool:
        """Keep ``data`` under ``key`` if the cap allows it, evicting the least recently used as
        needed. False when not kept (bigger than the cap, cache off, or the write failed: logged)."""
        if self.max_bytes <= 0 or len(data) > self.max_bytes:
            return False
        p = self.path(key, suffix)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(p, data)
        except OSError as e:
            self._warn(e)
            return False
        with self._lock:
            if self._bytes is None or time.monotonic() - self._counted_at >= RESCAN_S:
                self._bytes = sum(size for _, size, _ in _files(self.root))
                self._counted_at = time.monotonic()
            else:
                self._bytes += len(data)
            if self._bytes > self.max_bytes:
                self._evict()
        return True

    def _evict(self) -> None:
        """Remove the files used longest ago until at most LOW_WATER of the cap is held."""
        files = sorted(_files(self.root))
        held = sum(size for _, size, _ in files)
        target = int(self.max_bytes * LOW_WATER)
        for _, size, p in files:
            if held <= target:
                break
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                self._warn(e)
                continue
            held -= size
        self._bytes, self._counted_at = held, time.monotonic()

    def _warn(self, e: OSError) -> None:
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("picture cache not written; pictures are served uncached",
                        extra={"cache_dir": str(self.root), "error": str(e)})


def usage(root: str | Path) -> tuple[int, int]:
    """(files, bytes) held under ``root`` (sizes of the files, as the cap counts them)."""
    files = _files(Path(root))
    return len(files), sum(size for _, size, _ in files)
