"""The original on disk: read it once without following links, recognise it again, remove it
durably; and the names of the files archive writes beside it."""

from __future__ import annotations

import os
import stat as statmod
from pathlib import Path

from ..storage import atomic
from ..storage.vault import sha256_file


def read_original(path: Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes and the stat they belong to (``O_NOFOLLOW``: a symlink is refused)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    return data, st


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


def sidecar_path(path: Path, ext: str, file_id: int | None = None) -> Path:
    """Where the compressed file goes: beside the original, ``photo.jpg`` -> ``photo.jpg.jxl``;
    if that name is taken (e.g. by an older version's file), ``photo.jpg.<id>.jxl``."""
    p = path.with_name(path.name + ext)
    if (p.exists() or p.is_symlink()) and file_id is not None:
        p = path.with_name(f"{path.name}.{file_id}{ext}")
    return p


def tmp_for(final: Path, file_id: int) -> Path:
    """The temp name for a compressed file: fixed per row, so recovery knows what to clean."""
    return final.with_name(f"{atomic.TMP_PREFIX}{final.name}.{file_id}.part")
