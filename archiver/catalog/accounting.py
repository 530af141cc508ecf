"""Disk accounting: what the archived files took before, and what archiving takes now, split
into the outputs on the source disks, the vault, the catalog itself and the dashboard's picture
cache.

"Before" and "outputs" come from the catalog (committed versions, summed in SQL); the vault, the
catalog and the web cache are measured on disk, because that is what the operator's ``df`` sees
(the vault also holds copies the retention period has not freed yet; the cache is capped by
``web.cache_max_bytes``).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import text

from . import duplicates as dup
from . import queries as q


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


def catalog_bytes(catalog) -> int | None:
    """The catalog's size on disk: the SQLite file with its WAL and shared memory, or the
    PostgreSQL database's size."""
    url = catalog.url
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):])
        return sum(os.stat(p).st_blocks * 512 for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())
    try:
        with catalog.engine.connect() as c:
            return int(c.execute(text("select pg_database_size(current_database())")).scalar())
    except Exception:  # noqa: BLE001 - another server: unknown, not an error
        return None


def after_vault(now: int, vault_on_disk: int, schedule: dict, before: int) -> dict:
    """What the disk will hold once the vault's retention ends: ``until`` (the last day an
    original leaves the vault, None when none is scheduled to), ``bytes`` (now less what leaves
    the vault: the originals scheduled to leave, and those past retention that the next expiry
    deletes, never more than the vault holds on disk), the fraction against ``before``, and the
    originals kept with no end (legal hold, no retention)."""
    frees = schedule["frees"]
    leaving = sum(f["bytes"] for f in frees) + schedule["past_retention"]["bytes"]
    files = sum(f["files"] for f in frees) + schedule["past_retention"]["files"]
    left = now - min(vault_on_disk, leaving)
    return {"until": frees[-1]["day"] if frees else None, "files": files, "bytes": left,
            "change_fraction": round((left - before) / before, 4) if before else 0.0,
            "kept_forever": schedule["kept_forever"]}


def disk_accounting(catalog, vault_dir: Path, web_cache_dir: Path | None = None) -> dict:
    """Bytes before and now; ``now`` splits into outputs, vault, catalog and web cache (the
    dashboard's picture cache under ``web_cache_dir``; 0 when absent)."""
    with catalog.session() as s:
        sav = q.savings(s)
        fallbacks = q.fallback_counts(s)
        shared = dup.shared_counts(s)
        schedule = q.vault_schedule(s)
    t = sav["total"]
    vault = _tree_bytes(vault_dir) if vault_dir.exists() else 0
    cat = catalog_bytes(catalog) or 0
    cache = _tree_bytes(web_cache_dir) if web_cache_dir is not None and web_cache_dir.exists() else 0
    now = t["bytes_after"] + vault + cat + cache
    before = t["bytes_before"]
    return {
        "bytes_before": before,
        "bytes_now": now,
        "now": {"outputs": t["bytes_after"], "vault": vault, "catalog": cat, "web_cache": cache},
        "change_bytes": now - before,
        "change_fraction": round((now - before) / before, 4) if before else 0.0,
        "vault_retained_bytes": t["vault_bytes"],
        "after_vault": after_vault(now, vault, schedule, before),
        "total": t,
        "by_rule": sav["by_rule"],
        "by_fallback_reason": fallbacks,
        "states": sav["states"],
        "shared": shared,
        "note": "outputs = compressed files plus originals left in place; vault = originals kept for their "
                "retention period (the daemon deletes them when it ends); catalog = its database; web_cache = "
                "the dashboard's converted and decoded pictures (capped by web.cache_max_bytes; safe to delete)",
    }
