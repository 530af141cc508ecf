"""The original on disk: read it once without following links, recognise it again, take it out
of the user's name and remove it only when what was taken is the very file archived; and the
names of the files archive writes beside it."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat as statmod
from dataclasses import dataclass
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
    would land in an unlinked inode if the file were removed now)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        return _has_writer(fd)
    finally:
        os.close(fd)


def _has_writer(fd: int) -> bool:
    """Whether any process has the file of ``fd`` (opened read-only) open for writing. A read
    lease is refused by the kernel exactly then; where leases are not allowed, /proc is searched."""
    try:
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


@dataclass(frozen=True)
class Identity:
    """The very file archived: its content, and where recorded its size, mtime and inode."""

    sha256: str
    size: int | None = None
    mtime_ns: int | None = None
    inode: int | None = None

    @classmethod
    def of_row(cls, row) -> "Identity":
        return cls(row.sha256, row.size, row.mtime_ns, getattr(row, "inode", None))


#: why a taken file is not removed: it is another file or other content, or is being written to
DIFFERENT, WRITTEN_TO = "different", "written_to"


def looks_same(path: Path, want: Identity) -> bool:
    """The cheap check before taking: ``path`` is a regular file with the recorded size, mtime and
    inode (its content is compared after it was taken, see ``differs``)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return statmod.S_ISREG(st.st_mode) and _stat_matches(st, want)


def _stat_matches(st: os.stat_result, want: Identity) -> bool:
    return ((want.size is None or st.st_size == want.size) and (want.mtime_ns is None or st.st_mtime_ns == want.mtime_ns)
            and (want.inode is None or st.st_ino == want.inode))


def taken_path(path: Path, file_id: int) -> Path:
    """Where ``path`` waits while its removal is decided: the same directory (the one place sure
    to be on the same filesystem, so the move is one atomic rename) under a hidden name that only
    archiver writes and every scanner skips (``atomic.is_private_name``)."""
    return path.with_name(fit_name(atomic.TAKEN_PREFIX + path.name, f".{file_id}.taken"))


def take(path: Path, taken: Path) -> None:
    """Move whatever is at ``path`` to ``taken`` in one atomic rename, durably. From then on the
    user's name is free: a file written there is a new file that archiver never touches."""
    atomic.rename_noreplace(path, taken)
    atomic.fsync_dir(path.parent)


def differs(taken: Path, want: Identity) -> tuple[str, str] | None:
    """None when ``taken`` is the very file ``want`` describes (regular file, size, mtime, inode
    and SHA-256, all read through one descriptor that does not follow links) and no process has it
    open for writing; else (``DIFFERENT`` or ``WRITTEN_TO``, why)."""
    try:
        fd = os.open(taken, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        return DIFFERENT, f"what was taken cannot be opened as a file ({e.strerror})"
    try:
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode):
            return DIFFERENT, "what was taken is not a regular file"
        if want.inode is not None and st.st_ino != want.inode:
            return DIFFERENT, "another file took its name (a different inode)"
        if not _stat_matches(st, want):
            return DIFFERENT, "its size or modification time changed"
        if _has_writer(fd):
            return WRITTEN_TO, "another process has it open for writing"
        h = hashlib.sha256()
        for chunk in iter(lambda: os.read(fd, 1 << 20), b""):
            h.update(chunk)
        if h.hexdigest() != want.sha256:
            return DIFFERENT, "its content changed"
        return None
    finally:
        os.close(fd)


def give_back(taken: Path, path: Path, conflict: Path) -> Path:
    """Put what was taken back under the user's name, never over a file written there since; if
    that name is in use, keep it beside under ``conflict`` (then ``conflict`` with a number).
    Returns where it is now; nothing is ever removed."""
    candidates = [path, conflict] + [conflict.with_name(f"{conflict.stem}-{n}{conflict.suffix}") for n in range(2, 100)]
    for dest in candidates:
        try:
            atomic.rename_noreplace(taken, dest)
        except FileExistsError:
            continue
        atomic.fsync_dir(dest.parent)
        return dest
    return taken  # every name in use: it stays under its private name, which nothing removes


def conflict_path(path: Path, file_id: int) -> Path:
    """The name a taken original keeps when its own name was written again meanwhile:
    ``photo.jpg`` -> ``photo.archiver-kept-<id>.jpg`` (still opens as what it is)."""
    return path.with_name(fit_name(f"{path.stem}.archiver-kept-{file_id}", path.suffix))


def remove_own(path: Path, file_id: int, sha256: str | None) -> str | None:
    """Remove a file archiver wrote at a name it reserved (a compressed file, a preview): taken
    first, judged by what was taken (a regular file, with ``sha256`` when given), then dropped or
    given back. Returns None when it is gone (or was not there), else why it stays."""
    if not os.path.lexists(path):
        return None
    taken = taken_path(path, file_id)
    take(path, taken)
    why = differs(taken, Identity(sha256)) if sha256 else _not_regular(taken)
    if why is None:
        drop(taken)
        return None
    where = give_back(taken, path, conflict_path(path, file_id))
    return f"{why[1]}; left in place" + ("" if where == path else f" as {where}")


def _not_regular(taken: Path) -> tuple[str, str] | None:
    st = os.lstat(taken)
    return None if statmod.S_ISREG(st.st_mode) else (DIFFERENT, "not a regular file")


def drop(taken: Path) -> None:
    """Remove a taken file for good (it was judged the very file archived), durably."""
    os.unlink(taken)
    atomic.fsync_dir(taken.parent)


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
