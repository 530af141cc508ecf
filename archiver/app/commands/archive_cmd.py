"""``archiver archive``: archive images per policy (the unit of work over each file)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import click

from ...errors import ArchiverError, CatalogError, InputError, NoCatalogError, NoSpaceError
from ..core import with_core
from ..output import emit, human_bytes, progress

def _files(paths, not_taken: list[tuple[str, str]] | None = None) -> list[tuple[Path, str]]:
    """(file, root) pairs: named files as given, directories walked for images (our outputs skipped);
    ``not_taken`` gets (path, reason) of the other files found there (``watcher.why_not_taken``)."""
    from ...imageio import IMAGE_SUFFIXES  # heavy: archiver.imageio (PIL), not loaded by archiver --help
    from ...preview import is_preview  # heavy: archiver.preview, not loaded by archiver --help
    from ...service.watcher import why_not_taken  # heavy: the service's watcher (watchdog), not loaded by archiver --help
    from ...storage.atomic import is_temp_name  # heavy: storage.atomic (~9 ms), not loaded by archiver --help

    out = []
    for p in map(Path, paths):
        if p.is_dir():
            root = os.path.abspath(p)
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    f = Path(dirpath) / name
                    if f.suffix.lower() in IMAGE_SUFFIXES and not is_temp_name(f) and not is_preview(f):
                        out.append((f, root))
                    elif not_taken is not None and f.is_file() and not f.is_symlink() and why_not_taken(f):
                        not_taken.append((str(f), why_not_taken(f)))
        else:
            out.append((p, os.path.abspath(p.parent)))
    return out


def _not_taken_line(groups: list[dict]) -> str:
    """``2 .dng (camera raw: kept untouched), 1 .txt (not an image)``."""
    return ", ".join(f"{g['files']} {g['type']} ({g['reason']})" for g in groups)


def _human_archive(d: dict) -> str:
    lines = []
    for o in d["files"]:
        what = o["action"] or "-"
        extra = ""
        if o["state"] in ("committed", "dry-run", "unchanged") and o["size_before"]:
            extra = f" {human_bytes(o['size_before'])} -> {human_bytes(o['size_after'] or 0)}"
        if o["disposition"]:
            extra += f", original {o['original_status'] or o['disposition']}"
        why = f" ({o['error']})" if o["error"] else (f" ({o['fallback']})" if o["fallback"] else "")
        lines.append(f"{o['state']:<9} {what:<9} {o['path']}{extra}{why}")
    t = d["summary"]
    if t.get("not_taken"):
        lines.append(f"not taken: {_not_taken_line(t['not_taken'])}")
    lines.append(f"{t['files']} file(s): " + ", ".join(f"{k} {v}" for k, v in sorted(t["states"].items()))
                 + f"; {human_bytes(t['bytes_before'])} -> {human_bytes(t['bytes_after'])}"
                 + (" (dry run: nothing was written)" if t.get("dry_run") else ""))
    return "\n".join(lines)


def _archive_catalog(cfg, dry_run: bool):
    """``archive`` creates the catalog on a fresh home; its dry run creates nothing (on a fresh
    home it plans against an empty catalog in memory). A catalog that existed and is gone is an
    error either way."""
    from ...catalog.db import open_catalog  # heavy: sqlalchemy (catalog), not loaded by archiver --help

    if not dry_run:
        return open_catalog(cfg, create=True)
    try:
        return open_catalog(cfg)
    except NoCatalogError:
        return open_catalog("sqlite://", create=True)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--policy", "policy_path", type=click.Path(), default=None, help="policy file or shipped policy name")
@click.option("--config", "config_path", type=click.Path(), default=None, help="config file")
@click.option("--dry-run", is_flag=True, help="classify and encode in memory only; write nothing, change nothing")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@with_core
def archive(paths, policy_path, dry_run, as_json, core):
    """Archive images per policy: compress, verify, record in the catalog, then replace/vault/keep the original."""
    from ...work import ArchiveContext, ArchiveOutcome, archive_file, recover_pending  # heavy: sqlalchemy (work), not loaded by archiver --help

    from ...service import untaken  # heavy: sqlalchemy (service), not loaded by archiver --help

    cfg = core.cfg
    passed: list[tuple[str, str]] = []
    files = _files(paths, passed)
    if not files:
        what = f" (not taken: {_not_taken_line(untaken.group(passed))})" if passed else ""
        raise InputError(f"no images found in {', '.join(paths)}{what}")
    catalog = core.guard(lambda: _archive_catalog(cfg, dry_run))
    ctx = core.guard(lambda: ArchiveContext.from_config(cfg, policy=policy_path, catalog=catalog, dry_run=dry_run))
    if not dry_run:  # finish or roll back what an interrupted run left anywhere in the catalog
        core.guard(lambda: recover_pending(ctx))
    outcomes = []
    for f, root in progress(files, total=len(files), desc="archive", enabled=not as_json and len(files) > 1):
        ctx.root = root
        try:
            o = core.guard(lambda: archive_file(f, ctx))
        except (CatalogError, NoSpaceError):  # e.g. the catalog's disk is full: stop (exit 13), not fail each file
            raise
        except ArchiverError as e:
            o = ArchiveOutcome(str(f), "failed", error=str(e))
        outcomes.append(o.to_dict())
    states = Counter(o["state"] for o in outcomes)
    summary = {"files": len(outcomes), "states": dict(states), "dry_run": dry_run,
               "bytes_before": sum(o["size_before"] or 0 for o in outcomes),
               "bytes_after": sum((o["size_after"] if o["size_after"] is not None else o["size_before"] or 0) for o in outcomes)}
    summary["not_taken"] = untaken.group([*passed, *untaken.of_outcomes(
        {"path": o["path"], "reasons": o.get("reasons"), "status": o["state"], "error": o["error"]} for o in outcomes)])
    emit({"files": outcomes, "summary": summary}, as_json, _human_archive)
    if states.get("failed"):
        raise SystemExit(1)
    if states.get("skipped") == len(outcomes) and all(o["error"] for o in outcomes):
        raise SystemExit(InputError.exit_code)
