"""Opening a file below a trusted folder without following a symbolic link on the way.

``open_regular_below(base, parts)`` walks from ``base`` one name at a time with ``openat``
(``dir_fd``) and ``O_NOFOLLOW``, so neither a folder below ``base`` nor the file itself can be a
symbolic link, and there is no window between a check and the open in which one could be swapped
in. Used where bytes must come from exactly the place named: vault objects, bench pictures.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
from pathlib import Path
from typing import Sequence

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
#: the errors that mean "something other than a plain folder or a regular file is there"
NOT_PLAIN = (errno.ELOOP, errno.ENOTDIR, errno.EINVAL)


def open_regular_below(base: str | Path, parts: Sequence[str]) -> int:
    """A read-only descriptor of the regular file ``base/parts[0]/.../parts[-1]``.

    ``base`` itself is trusted (it may be a link: a configured folder); every name below it is
    opened with ``O_NOFOLLOW``. A symbolic link anywhere below ``base`` raises ``OSError`` with
    ``ELOOP`` or ``ENOTDIR``; anything but a regular file at the end (a FIFO is opened with
    ``O_NONBLOCK``, so it never blocks) ``EINVAL``; a name that is empty, ``.``, ``..`` or holds a
    ``/`` ``EINVAL``; a missing one ``ENOENT``. The caller closes the descriptor."""
    if not parts or any(p in ("", ".", "..") or "/" in p or "\0" in p for p in parts):
        raise OSError(errno.EINVAL, f"not a plain relative name: {'/'.join(parts)!r}")
    fd = os.open(base, os.O_RDONLY | _DIRECTORY)
    try:
        for name in parts[:-1]:
            sub = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
        out = os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)
    if not statmod.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        raise OSError(errno.EINVAL, f"{'/'.join(parts)}: not a regular file")
    return out


def read_regular_below(base: str | Path, parts: Sequence[str]) -> bytes:
    """The bytes of ``base/parts...``, opened as ``open_regular_below`` does."""
    with os.fdopen(open_regular_below(base, parts), "rb") as f:
        return f.read()
