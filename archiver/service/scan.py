"""What still needs work: candidates on disk minus what the catalog already handled.

A file is "handled" when its newest catalog version is terminal (committed, skipped, failed)
and was made from the same size and mtime; anything else (new, changed, interrupted) is work.
Nothing here ever records a deletion: a file missing from disk is simply not work.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

from ..catalog import queries
from ..catalog.models import FAILED, TERMINAL
from .watcher import walk


def norm_root(root: str) -> str:
    return os.path.abspath(os.path.expanduser(str(root)))


def root_of(path: str, roots: Iterable[str]) -> str | None:
    """The (longest) configured root containing ``path``."""
    best = None
    for r in roots:
        if path == r or path.startswith(r.rstrip(os.sep) + os.sep):
            if best is None or len(r) > len(best):
                best = r
    return best


def handled_map(catalog, root: str | None = None) -> dict[str, tuple[int | None, int | None, str]]:
    """path -> (size, mtime_ns, state) of the newest version, for the files under ``root``."""
    with catalog.session() as s:
        return queries.handled_map(s, root)


def is_handled(rec: tuple | None, st: os.stat_result, *, retry_failed: bool = False) -> bool:
    """``retry_failed``: a failed version counts as work again (an operator's explicit rerun)."""
    done = TERMINAL if not retry_failed else tuple(s for s in TERMINAL if s != FAILED)
    return rec is not None and rec[2] in done and rec[0] == st.st_size and rec[1] == st.st_mtime_ns


def already_handled(catalog, path: str, st: os.stat_result | None = None) -> bool:
    if st is None:
        st = os.stat(path)
    with catalog.session() as s:
        return is_handled(queries.newest_stat(s, path), st)


def pending_work(catalog, roots: Iterable[str]) -> Iterator[tuple[str, str, os.stat_result]]:
    """(path, root, stat) of every candidate under ``roots`` the catalog has not handled."""
    for root in roots:
        known = handled_map(catalog, root)
        for path in walk(root):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not is_handled(known.get(path), st):
                yield path, root, st
