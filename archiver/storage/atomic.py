"""Crash-safe file replacement: a reader sees the old file or the complete new one, never half.

Write to a temporary name in the same directory, fsync the file, rename it into place, fsync
the directory so the rename itself survives a power cut.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import secrets
import tempfile
from pathlib import Path
from typing import Callable, Optional

TMP_PREFIX = ".archiver-tmp-"
#: an original moved out of the user's name while its removal is decided (``work.files.take``):
#: never a leftover to delete, always a file to finish or give back
TAKEN_PREFIX = ".archiver-taken-"


def fsync_dir(directory: str | Path) -> None:
    fd = os.open(str(directory), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes, *, overwrite: bool = True, mode: int | None = None,
                owner: tuple[int, int] | None = None) -> Path:
    """Atomically write ``data`` to ``path``. With ``overwrite=False`` an existing file is an error
    (``FileExistsError``) and is left untouched. ``owner`` = (uid, gid) to give it (see ``set_owner``)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # before the owner changes: afterwards it needs CAP_FOWNER
            set_owner(f.fileno(), owner)
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError instead of clobbering
            os.unlink(tmp)
        fsync_dir(directory)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def open_dir_nofollow(path: str | Path, *, create: bool = False) -> int:
    """A descriptor of the absolute directory ``path``, reached one component at a time from ``/``
    without following any symbolic link (``ELOOP``/``ENOTDIR`` where a component is a link or not a
    directory), missing components made (mode 0o755) when ``create``. The caller closes it."""
    path = Path(path)
    if not path.is_absolute():
        raise ValueError(f"{path}: not an absolute path")
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open("/", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for part in path.parts[1:]:
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    os.fsync(fd)
                except FileExistsError:
                    pass
                nfd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_in_dir(dir_fd: int, name: str, data: bytes, *, overwrite: bool, mode: int | None = None,
                 owner: tuple[int, int] | None = None, mtime_ns: int | None = None) -> os.stat_result:
    """``write_bytes`` relative to an open directory (see ``open_dir_nofollow``), so that nothing
    between the check of the path and the write can redirect it: temp file, fsync, then a rename
    over ``name`` (``overwrite``; a link at ``name`` is replaced, never followed) or a hard link
    that fails with ``FileExistsError`` instead of clobbering; the directory fsynced. Returns the
    written file's stat."""
    tmp = f"{TMP_PREFIX}{secrets.token_hex(8)}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            _set_mode_owner(fd, mode if mode is not None else 0o644, owner)
            os.fsync(fd)
        finally:
            os.close(fd)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
        if overwrite:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            os.unlink(tmp, dir_fd=dir_fd)
        os.fsync(dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise
    return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)


def copy_file(src: str | Path, dst: str | Path, *, overwrite: bool = False) -> Path:
    """Atomically copy a file (works across filesystems, unlike rename), keeping its mtime."""
    src = Path(src)
    out = write_bytes(dst, src.read_bytes(), overwrite=overwrite)
    st = src.stat()
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    return out


def is_temp_name(path: str | Path) -> bool:
    """Leftovers of an interrupted write; scanners must ignore and may delete them."""
    return Path(path).name.startswith(TMP_PREFIX)


def is_private_name(path: str | Path) -> bool:
    """Names only archiver writes (temp files, originals taken for removal): never archived,
    never shown as the user's files."""
    name = Path(path).name
    return name.startswith(TMP_PREFIX) or name.startswith(TAKEN_PREFIX)


#: errors of ``link`` on filesystems without hard links
LINK_UNSUPPORTED = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK)
_AT_FDCWD, _RENAME_NOREPLACE = -100, 1


def _renameat2_noreplace(src: str | Path, dst: str | Path) -> bool:
    """``renameat2(RENAME_NOREPLACE)``; False where the C library, kernel or filesystem lacks it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise FileExistsError(err, os.strerror(err), str(dst))
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(src))


def rename_noreplace(src: str | Path, dst: str | Path) -> None:
    """Move ``src`` to ``dst`` in one step, raising ``FileExistsError`` instead of replacing a file
    at ``dst``. ``renameat2(RENAME_NOREPLACE)``; else a hard link and then dropping ``src``; on a
    filesystem with neither, a rename after checking that ``dst`` is free (the one residual race,
    on such filesystems only)."""
    if _renameat2_noreplace(src, dst):
        return
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as e:
        if e.errno not in LINK_UNSUPPORTED:
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def is_utf8(name: str) -> bool:
    """Whether a name (decoded from the file system with surrogate escapes) is valid UTF-8: the
    catalog stores text, so a name that is not cannot be recorded."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def shown_name(name: str) -> str:
    """A name fit for messages and JSON: bytes that are not UTF-8 written as ``\\xNN``."""
    return name if is_utf8(name) else os.fsencode(name).decode("utf-8", "backslashreplace")


_owner_warned = False


def set_owner(fd: int, owner: tuple[int, int] | None) -> bool:
    """Give a written file the original's owner and group. Tried whenever they differ from ours,
    not only as root: a service user with CAP_CHOWN (the shipped systemd unit grants it) may, and
    any user may hand a file to one of its own groups. Returns False (and logs one warning per
    process) when the system refused; the file keeps the service user's ownership."""
    global _owner_warned
    if owner is None or tuple(owner) == (os.geteuid(), os.getegid()):
        return True
    uid, gid = owner
    try:
        os.fchown(fd, uid, gid)
        return True
    except PermissionError:
        try:
            os.fchown(fd, -1, gid)  # at least the group, when we belong to it
        except OSError:
            pass
    except OSError:  # e.g. a filesystem without owners: the mode still applies
        return False
    if not _owner_warned:
        _owner_warned = True
        logging.getLogger("archiver.storage").warning(
            "cannot give written files their original owner (uid %s, gid %s): running as uid %s without "
            "CAP_CHOWN; see docs/operations.md (systemd)", uid, gid, os.geteuid(), extra={"uid": uid, "gid": gid})
    return False


def _set_mode_owner(fd: int, mode: int, owner: tuple[int, int] | None) -> None:
    os.fchmod(fd, mode & 0o7777)  # before the owner changes: afterwards it would need CAP_FOWNER
    set_owner(fd, owner)


def create_new(path: Path, data: bytes, tmp: Path, *, mode: int | None = None,
               owner: tuple[int, int] | None = None, before_link: Optional[Callable[[], None]] = None) -> None:
    """Write a file that must not exist yet, crash-safely: ``tmp`` (a fixed name the caller can
    clean up after a crash; fsynced) -> hard link to the final name (fails instead of clobbering)
    -> drop ``tmp`` -> fsync the directory. ``mode`` and ``owner`` (the original's) are applied
    so the new file is as readable as the original."""
    tmp.unlink(missing_ok=True)  # a leftover of an earlier crash
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            _set_mode_owner(fd, mode if mode is not None else 0o644, owner)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_link is not None:
            before_link()
        try:
            os.link(tmp, path)
        except OSError as e:  # filesystems without hard links: rename, after checking the name is free
            if e.errno not in LINK_UNSUPPORTED or os.path.lexists(path):
                raise
            os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
