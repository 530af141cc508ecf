"""The vault: originals kept for a retention period before they are deleted for good.

Content-addressed (``objects/ab/<sha256>``) so putting the same original twice is free and a
crash between "copied to the vault" and "catalog committed" leaves only a reusable object.
``put`` copies (never renames — the vault may be on another filesystem, where rename fails with
EXDEV), fsyncs, and re-reads the copy to check its SHA-256 before anyone may delete the source.
Each object has a small JSON sidecar with its expiry (the latest of all puts).

Nothing is trusted on size or name alone: ``read_verified`` is the one way to take an original
back out (the web's original picture, restore), and it, ``get`` and ``check`` refuse a symbolic
link anywhere below the vault root and anything but a regular file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import stat as statmod
from pathlib import Path
from typing import Iterable

from ..errors import ArchiverError
from . import atomic
from .safeopen import NOT_PLAIN, open_regular_below

_SHA256 = re.compile(r"[0-9a-f]{64}")


class VaultError(ArchiverError):
    exit_code = 9


class VaultDamaged(VaultError):
    """The vault holds something under an original's name that is not that original: other bytes,
    a symbolic link (the object or a folder on its way), a FIFO or another non-regular file."""


def sha256_file(path: str | Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(bufsize), b""):
            h.update(chunk)
    return h.hexdigest()


class Vault:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def holding(cls, object_path: str | Path) -> "Vault":
        """The vault whose object ``object_path`` is (``<root>/objects/ab/<sha256>``, as a catalog
        row's ``vault_path`` records it); ``VaultError`` for a path of another shape."""
        p = Path(object_path)
        if not (_SHA256.fullmatch(p.name) and p.parent.name == p.name[:2] and p.parent.parent.name == "objects"):
            raise VaultError(f"{p}: not a vault object's path")
        return cls(p.parents[2])

    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def _meta_path(self, sha256: str) -> Path:
        return self.object_path(sha256).with_suffix(".json")

    def _mkdirs(self, d: Path) -> None:
        missing = []
        p = d
        while not p.exists():
            missing.append(p)
            p = p.parent
        d.mkdir(parents=True, exist_ok=True)
        for m in reversed(missing):  # make each new directory entry durable
            atomic.fsync_dir(m.parent)

    def put(self, src: str | Path, sha256: str, *, expires_at: dt.datetime | None = None,
            source_path: str | None = None) -> Path:
        """Copy ``src`` into the vault and check the copy; returns the object's path."""
        dst = self.object_path(sha256)
        if self.check(sha256):
            self._write_meta(sha256, expires_at, source_path)
            return dst
        data = Path(src).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise VaultError(f"{src}: content changed (SHA-256 differs from the catalog); not vaulted")
        self._mkdirs(dst.parent)
        atomic.write_bytes(dst, data, mode=0o444)
        if not self.check(sha256):
            dst.unlink(missing_ok=True)
            raise VaultError(f"{dst}: the vault copy does not read back correctly")
        self._write_meta(sha256, expires_at, source_path)
        return dst

    def _write_meta(self, sha256: str, expires_at: dt.datetime | None, source_path: str | None) -> None:
        meta = self.meta(sha256) or {"sources": []}
        old = meta.get("expires_at")
        if expires_at is None or old is None and "expires_at" in meta:
            new = None  # "keep forever" wins
        else:
            new = max(filter(None, [expires_at.isoformat(), old]))
        meta["expires_at"] = new
        if source_path and source_path not in meta["sources"]:
            meta["sources"].append(source_path)
        atomic.write_bytes(self._meta_path(sha256), json.dumps(meta, sort_keys=True).encode())

    def meta(self, sha256: str) -> dict | None:
        try:
            return json.loads(self._meta_path(sha256).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _open(self, sha256: str) -> int:
        """A descriptor of the object, opened without following links (``safeopen``)."""
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise VaultError(f"not a SHA-256 (64 lowercase hex digits): {sha256!r}")
        p = self.object_path(sha256)
        try:
            return open_regular_below(self.root, p.relative_to(self.root).parts)
        except FileNotFoundError:
            raise VaultError(f"{p}: no vault copy of {sha256}") from None
        except OSError as e:
            if e.errno in NOT_PLAIN:
                raise VaultDamaged(f"{p}: vault copy damaged: a symbolic link or not a regular file "
                                   "where the vault wrote one; refused") from None
            raise VaultError(f"{p}: vault copy unreadable ({e.strerror or e})") from None

    def read_verified(self, sha256: str) -> bytes:
        """The original whose SHA-256 is ``sha256``, from its vault object: the one way to take an
        original out of the vault (the web's picture, restore).

        The object is opened with ``O_NOFOLLOW`` (nor is any folder between the vault root and it a
        link), must be a regular file, and its bytes must hash to ``sha256``. Raises ``VaultError``
        when there is no object or it cannot be read, and ``VaultDamaged`` (a ``VaultError``) when
        what is there is not that original — never returns other bytes."""
        with os.fdopen(self._open(sha256), "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise VaultDamaged(f"{self.object_path(sha256)}: vault copy damaged (its SHA-256 is not the original's)")
        return data

    def get(self, sha256: str) -> Path | None:
        """The object's path when the vault holds a regular file under that name, reached without
        a link; None otherwise. Its content is not checked (``check``, ``read_verified`` do)."""
        try:
            os.close(self._open(sha256))
        except VaultError:
            return None
        return self.object_path(sha256)

    def check(self, sha256: str) -> bool:
        """Whether the object is there, a regular file reached without a link, with the right
        SHA-256 (read in chunks: an original may be large)."""
        try:
            fd = self._open(sha256)
        except VaultError:
            return False
        h = hashlib.sha256()
        with os.fdopen(fd, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest() == sha256

    def objects(self) -> Iterable[str]:
        base = self.root / "objects"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.glob("??/*") if not p.name.endswith(".json") and not atomic.is_temp_name(p))

    def expire(self, now: dt.datetime, *, keep: Iterable[str] = ()) -> list[str]:
        """Delete objects whose retention ended before ``now`` (naive UTC), except ``keep``
        (e.g. originals under legal hold). Returns the deleted SHA-256s."""
        keep = set(keep)
        gone = []
        for sha in self.objects():
            meta = self.meta(sha)
            if sha in keep or not meta or not meta.get("expires_at"):
                continue
            if dt.datetime.fromisoformat(meta["expires_at"]) <= now:
                p = self.object_path(sha)
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    st = None
                if st is not None and statmod.S_ISREG(st.st_mode):  # chmod follows links: never a file elsewhere
                    os.chmod(p, 0o644)
                p.unlink(missing_ok=True)
                self._meta_path(sha).unlink(missing_ok=True)
                atomic.fsync_dir(p.parent)
                gone.append(sha)
        return gone
