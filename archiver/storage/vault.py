"""The vault: originals kept for a retention period before they are deleted for good.

Content-addressed (``objects/ab/<sha256>``) so putting the same original twice is free and a
crash between "copied to the vault" and "catalog committed" leaves only a reusable object.
``put`` copies (never renames — the vault may be on another filesystem, where rename fails with
EXDEV), fsyncs, and re-reads the copy to check its SHA-256 before anyone may delete the source.
Each object has a small JSON sidecar with its expiry (the latest of all puts).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from ..errors import ArchiverError
from . import atomic


class VaultError(ArchiverError):
    exit_code = 9


def sha256_file(path: str | Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(bufsize), b""):
            h.update(chunk)
    return h.hexdigest()


class Vault:
    def __init__(self, root: str | Path):
        self.root = Path(root)

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
        if dst.exists() and sha256_file(dst) == sha256:
            self._write_meta(sha256, expires_at, source_path)
            return dst
        data = Path(src).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise VaultError(f"{src}: content changed (SHA-256 differs from the catalog); not vaulted")
        self._mkdirs(dst.parent)
        atomic.write_bytes(dst, data, mode=0o444)
        if sha256_file(dst) != sha256:
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

    def get(self, sha256: str) -> Path | None:
        p = self.object_path(sha256)
        return p if p.is_file() else None

    def check(self, sha256: str) -> bool:
        p = self.get(sha256)
        return p is not None and sha256_file(p) == sha256

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
                os.chmod(p, 0o644)
                p.unlink()
                self._meta_path(sha).unlink(missing_ok=True)
                atomic.fsync_dir(p.parent)
                gone.append(sha)
        return gone
