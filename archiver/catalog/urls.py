"""Catalog URLs read without a database library (a command that may not need the catalog at
all asks here first whether there is one)."""

from __future__ import annotations

from pathlib import Path


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for an in-memory SQLite catalog or another database."""
    if not url.startswith("sqlite") or "///" not in url:
        return None
    path = url.split("///", 1)[1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def may_exist(url: str) -> bool:
    """False only where the catalog certainly is not there: a SQLite file that does not exist or
    an in-memory catalog (always new); a server's database may exist."""
    if url.startswith("sqlite"):
        p = sqlite_path(url)
        return p is not None and p.exists()
    return True
