"""The original on disk: read it once without following links, recognise it again, remove it
durably; and the names of the files archive writes beside it."""

from __future__ import annotations

import errno
import hashlib
import os
import stat as statmod
from pathlib import Path

from ..storage import atomic
from ..storage.vault import sha256_file


def read_original(path: Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes and the stat they belong to. ``O_NOFOLLOW``: a symlink is refused;
    ``O_NONBLOCK`` + a regular-file check before reading: a FIFO never blocks us."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    st = os.fstat(fd)
    if not statmod.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    return data, st


def open_for_writing(path: Path) -> bool:
    """Whether some process has ``path`` open for writing (it may still be adding data, which
    would land in an unlinked inode if the file were removed now). A read lease is refused by
    the kernel exactly then; where leases are not allowed, /proc is searched instead."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EBUSY):
            return True
        st = os.fstat(fd)
        return _writer_in_proc(st.st_dev, st.st_ino)
    except (ImportError, AttributeError):  # not Linux
        return False
    finally:
        os.close(fd)


def _writer_in_proc(dev: int, ino: int) -> bool:
    """Search /proc/*/fdinfo for a descriptor of (dev, ino) opened for writing."""
    me = os.getpid()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
    except OSError:
        return False
    for pid in pids:
        base = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(base)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"{base}/{fd}")
                if (st.st_dev, st.st_ino) != (dev, ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    flags = next((int(line.split()[1], 8) for line in f if line.startswith("flags:")), 0)
                if flags & (os.O_WRONLY | os.O_RDWR):
                    return True
            except (OSError, ValueError):
                continue
    return False


def same_file(path: Path, size: int, mtime_ns: int, sha: str) -> bool:
    """Whether ``path`` is still the regular file that was read (size, mtime and SHA-256)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not statmod.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime_ns != mtime_ns:
        return False
    return sha256_file(path) == sha


def unlink_durable(path: Path) -> None:
    path.unlink()
    atomic.fsync_dir(path.parent)


#: longest file name (bytes) most filesystems take
NAME_MAX = 255


def fit_name(name: str, tail: str) -> str:
    """``name + tail``, with ``name`` shortened (cut on a character boundary, plus a hash of the
    whole name so different long names stay different) when the result would exceed NAME_MAX."""
    if len(os.fsencode(name + tail)) <= NAME_MAX:
        return name + tail
    tag = "~" + hashlib.sha1(os.fsencode(name)).hexdigest()[:12]
    room = NAME_MAX - len(os.fsencode(tag + tail))
    cut = os.fsencode(name)[:room].decode("utf-8", "ignore") if atomic.is_utf8(name) else name[:room // 4]
    return cut + tag + tail


def sidecar_path(path: Path, ext: str, file_id: int | None = None) -> Path:
    """Where the compressed file goes: beside the original, ``photo.jpg`` -> ``photo.jpg.jxl``;
    if that name is taken (e.g. by an older version's file), ``photo.jpg.<id>.jxl``. Names near
    the filesystem's limit are shortened (the catalog records the name actually used)."""
    p = path.with_name(fit_name(path.name, ext))
    if (p.exists() or p.is_symlink()) and file_id is not None:
        p = path.with_name(fit_name(path.name, f".{file_id}{ext}"))
    return p


def tmp_for(final: Path, file_id: int) -> Path:
    """The temp name for a compressed file: fixed per row, so recovery knows what to clean."""
    return final.with_name(fit_name(atomic.TMP_PREFIX + final.name, f".{file_id}.part"))
