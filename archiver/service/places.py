"""Shared storage across nodes: every node must see the same roots and vault at the same paths.

The catalog stores absolute paths (originals, the compressed files beside them, vaulted copies),
so with several nodes on one PostgreSQL catalog a path has to mean the same file on every node.
Decision: **the same mount path on every node** — no path map. A map would have to be applied on
every read of every row (restore, verify, recovery, the dashboard) and a single place that forgot
it would act on the wrong file; mounting the share at one path is an operator's one-line fstab
entry. What is enforced instead is that a node really sees the shared filesystem there:

- each root holds a marker ``.archiver-root`` and the vault a marker ``.archiver-vault``, each
  with a random id (written by the first node that uses it with a shared catalog, which records
  the id in the catalog's ``shared_places`` table);
- a daemon or ``migrate`` checks its own view against the catalog before it takes work: a root
  whose marker is missing (an unmounted share shows its empty mount point) or holds another id (a
  different filesystem at that path) is paused by the daemon and refused by ``migrate``;
- every task checks again on the node that runs it (``check_view``; a Ray worker on another host
  may see something else than its driver): a mismatch returns a ``refused`` outcome and touches
  nothing — a file that a node cannot see is never taken for deleted.

With a shared catalog the vault must be set explicitly (``vault_dir``): the default vault lives in
each node's private state directory, where other nodes could not restore from it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from ..catalog import queries
from ..errors import UsageError
from ..storage.atomic import write_bytes
from .roots import MARKER as ROOT_MARKER, is_empty

VAULT_MARKER = ".archiver-vault"
MARKERS = {"root": ROOT_MARKER, "vault": VAULT_MARKER}


def is_shared(catalog_url: str) -> bool:
    """A server catalog can be shared by several nodes; a SQLite file belongs to one host."""
    return not catalog_url.startswith("sqlite")


def require_shared_vault(cfg) -> None:
    if is_shared(cfg.resolved_catalog_url()) and not cfg.vault_dir:
        raise UsageError("with a shared (PostgreSQL) catalog set vault_dir to a directory every node mounts at the "
                         "same path; the default vault is in this node's private state directory")


def read_mark(directory: str | os.PathLike, kind: str) -> str | None:
    """The id in ``directory``'s marker, "" for an empty marker, None when there is none."""
    try:
        return (Path(directory) / MARKERS[kind]).read_text(errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def check_view(directory: str | None, expected: str | None, kind: str) -> str | None:
    """On the node running a task: what is wrong with its view of a shared root or vault."""
    if directory is None:
        return None
    local = read_mark(directory, kind)
    if not local:
        return (f"{directory}: no {MARKERS[kind]} on this node: the shared {kind} is not mounted here "
                "(or at another path); nothing was touched")
    if expected is not None and local != expected:
        return (f"{directory}: {MARKERS[kind]} holds {local}, the catalog recorded {expected}: another "
                "filesystem is mounted at this path on this node; nothing was touched")
    return None


def _create_mark(directory: str, kind: str) -> str:
    """Write a new id into the marker; if another node just created one, use that one. An empty
    marker an operator put there (the daemon's older convention) gets an id written into it."""
    marker = Path(directory) / MARKERS[kind]
    mark = uuid.uuid4().hex
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        existing = read_mark(directory, kind)
        if existing:
            return existing
        write_bytes(marker, (mark + "\n").encode())
        return mark
    try:
        os.write(fd, (mark + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return mark


class Places:
    """The catalog's record of shared roots and vaults, and this node's view checked against it."""

    def __init__(self, catalog, node: str):
        self.catalog = catalog
        self.node = node
        self._recorded: dict[str, str] = {}  # a recorded id never changes: cache it

    def _lookup(self, path: str) -> str | None:
        if path in self._recorded:
            return self._recorded[path]
        with self.catalog.session() as s:
            mark = queries.place_mark(s, path)
        if mark is not None:
            self._recorded[path] = mark
        return mark

    def _record(self, path: str, kind: str, mark: str) -> str:
        """Record ``mark`` for ``path`` unless another node was first; returns the recorded id."""
        queries.record_place(self.catalog, path, kind, mark, self.node)
        return self._lookup(path) or mark

    def register(self, path: str, kind: str) -> tuple[str | None, str | None]:
        """This node's view of a shared ``kind`` at ``path``: ``(recorded id, problem)``.

        The first node to see it (a root only once it holds something: an empty directory may be
        an unmounted mount point) writes the marker's id and records it; later nodes must find
        the same id. ``(None, None)``: an empty root nobody has recorded yet (nothing to do)."""
        path = str(path)
        recorded = self._lookup(path)
        local = read_mark(path, kind)
        if recorded is not None:
            problem = check_view(path, recorded, kind)
            return recorded, problem
        if not local:
            if not os.path.isdir(path):
                return None, f"{path}: the shared {kind} is missing on this node"
            if kind == "root" and is_empty(path):
                return None, None
            local = _create_mark(path, kind)
        recorded = self._record(path, kind, local)
        return recorded, check_view(path, recorded, kind)
