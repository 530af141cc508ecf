"""``archiver archive``, ``restore``, ``verify`` and ``stats``."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import click

from ..errors import AdapterError, ArchiverError, CatalogError, InputError, NoSpaceError, SafetyError, VerifyError
from ..output import emit, human_bytes, progress

IMAGE_EXTS = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".ppm", ".pgm", ".pnm"}


def _files(paths) -> list[tuple[Path, str]]:
    """(file, root) pairs: named files as given, directories walked for images (our outputs skipped)."""
    from ..preview import is_preview
    from ..storage.atomic import is_temp_name

    out = []
    for p in map(Path, paths):
        if p.is_dir():
            root = os.path.abspath(p)
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    f = Path(dirpath) / name
                    if f.suffix.lower() in IMAGE_EXTS and not is_temp_name(f) and not is_preview(f):
                        out.append((f, root))
        else:
            out.append((p, os.path.abspath(p.parent)))
    return out


def _config(config_path):
    from ..config import load_config

    return load_config(config_path)


def _guard_db(fn):
    """Database failures become one clear CatalogError line, not a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return fn()
    except SQLAlchemyError as e:
        raise CatalogError(f"catalog failure: {getattr(e, 'orig', e)}") from None


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
    lines.append(f"{t['files']} file(s): " + ", ".join(f"{k} {v}" for k, v in sorted(t["states"].items()))
                 + f"; {human_bytes(t['bytes_before'])} -> {human_bytes(t['bytes_after'])}"
                 + (" (dry run: nothing was written)" if t.get("dry_run") else ""))
    return "\n".join(lines)


def _archive_catalog(cfg, dry_run: bool):
    """``archive`` creates the catalog on a fresh home; its dry run creates nothing (on a fresh
    home it plans against an empty catalog in memory). A catalog that existed and is gone is an
    error either way."""
    from ..errors import NoCatalogError
    from .db import open_catalog

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
def archive(paths, policy_path, config_path, dry_run, as_json):
    """Archive images per policy: compress, verify, record in the catalog, then replace/vault/keep the original."""
    from ..work import ArchiveContext, ArchiveOutcome, archive_file, recover_pending

    cfg = _config(config_path)
    files = _files(paths)
    if not files:
        raise InputError(f"no images found in {', '.join(paths)}")
    catalog = _guard_db(lambda: _archive_catalog(cfg, dry_run))
    ctx = _guard_db(lambda: ArchiveContext.from_config(cfg, policy=policy_path, catalog=catalog, dry_run=dry_run))
    if not dry_run:  # finish or roll back what an interrupted run left anywhere in the catalog
        _guard_db(lambda: recover_pending(ctx))
    outcomes = []
    for f, root in progress(files, total=len(files), desc="archive", enabled=not as_json and len(files) > 1):
        ctx.root = root
        try:
            o = _guard_db(lambda: archive_file(f, ctx))
        except (CatalogError, NoSpaceError):  # e.g. the catalog's disk is full: stop (exit 13), not fail each file
            raise
        except ArchiverError as e:
            o = ArchiveOutcome(str(f), "failed", error=str(e))
        outcomes.append(o.to_dict())
    states = Counter(o["state"] for o in outcomes)
    summary = {"files": len(outcomes), "states": dict(states), "dry_run": dry_run,
               "bytes_before": sum(o["size_before"] or 0 for o in outcomes),
               "bytes_after": sum((o["size_after"] if o["size_after"] is not None else o["size_before"] or 0) for o in outcomes)}
    emit({"files": outcomes, "summary": summary}, as_json, _human_archive)
    if states.get("failed"):
        raise SystemExit(1)
    if states.get("skipped") == len(outcomes) and all(o["error"] for o in outcomes):
        raise SystemExit(InputError.exit_code)


def _codecs(cfg):
    """The codec registry with this installation's settings (each archived file names its codec)."""
    from ..work import Codecs

    return Codecs.from_config(cfg)


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--to", "to", type=click.Path(file_okay=False), default=None, help="restore under this directory (same relative paths)")
@click.option("--as-of", "as_of", default=None, help="the version committed at or before this ISO time (UTC unless a zone is given)")
@click.option("--force", is_flag=True, help="overwrite existing files")
@click.option("--lossy-suffix", default=None, metavar="SUFFIX",
              help="name approximate (lossy-codec) restores NAME<SUFFIX>.EXT, e.g. --lossy-suffix .reconstructed")
@click.option("--config", "config_path", type=click.Path(), default=None, help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def restore(targets, to, as_of, force, lossy_suffix, config_path, as_json):
    """Restore originals (PATH, catalog ID or GLOB): from the vault if still there, else through
    the file's codec: the exact original from an exact codec, the verified reconstruction (with
    the original's metadata, marked as a reconstruction) from a lossy one."""
    from ..storage.vault import Vault
    from .db import open_catalog
    from ..work.restore import parse_time, restore as do_restore

    cfg = _config(config_path)
    when = parse_time(as_of)
    cat = _guard_db(lambda: open_catalog(cfg))
    results = _guard_db(lambda: do_restore(cat, list(targets), vault=Vault(cfg.resolved_vault_dir()), codecs=_codecs(cfg),
                                            to=to, as_of=when, force=force, lossy_suffix=lossy_suffix))
    data = [r.to_dict() for r in results]

    def human(rows):
        return "\n".join(f"{r['status']:<8} {r['path']} -> {r['dest'] or '-'} [{r['source']}, {r['exact']}]"
                         + (f": {r['message']}" if r["message"] else "") for r in rows)

    emit({"results": data}, as_json, human=lambda d: human(d["results"]))
    errors = [r for r in results if r.status == "error"]
    if errors and all(r.exit_code == AdapterError.exit_code for r in errors):
        raise SystemExit(AdapterError.exit_code)  # only a missing/different adapter: its own code
    if errors:
        raise SystemExit(1)
    unrecorded = [r for r in results if r.status == "restored" and r.exit_code == NoSpaceError.exit_code]
    if unrecorded:  # every file is back, but the catalog's disk is full: say so once, exit 13
        click.echo(f"archiver: error: {len(unrecorded)} restore(s) not recorded in the catalog: "
                   f"{unrecorded[0].message.split('could not record it: ', 1)[-1]}", err=True)
        raise SystemExit(NoSpaceError.exit_code)
    if any(r.status == "refused" for r in results):
        raise SystemExit(SafetyError.exit_code)


@click.command()
@click.option("--sample", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0, show_default=True,
              help="fraction of committed files to check (random)")
@click.option("--no-decode", is_flag=True, help="only re-hash; do not re-decode")
@click.option("--expire-vault", is_flag=True,
              help="then delete vaulted originals past retention (never under legal hold, never the last good copy)")
@click.option("--config", "config_path", type=click.Path(), default=None, help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def verify(sample, no_decode, expire_vault, config_path, as_json):
    """Scrub: re-hash compressed files and vaulted originals, re-decode and compare; non-zero exit on any mismatch."""
    from ..storage.vault import Vault
    from .db import open_catalog
    from ..work.verify import expire_vault as do_expire, verify as do_verify

    cfg = _config(config_path)
    cat = _guard_db(lambda: open_catalog(cfg))
    vault = Vault(cfg.resolved_vault_dir())
    rep = _guard_db(lambda: do_verify(cat, vault=vault, codecs=_codecs(cfg), sample=sample, decode=not no_decode,
                                      progress=lambda it: progress(it, desc="verify", enabled=not as_json)))
    if expire_vault:
        rep.expired = _guard_db(lambda: do_expire(cat, vault))

    def human(d):
        lines = [f"MISMATCH {m['path']} (id {m['id']}): {m['problem']}" for m in d["mismatches"]]
        lines += [f"warning  {m['path']} (id {m['id']}): {m['problem']}" for m in d["warnings"]]
        lines.append(f"checked {d['checked']} of {d['total']}: {d['ok']} ok, {len(d['mismatches'])} mismatch(es)")
        if d.get("expired"):
            lines.append(f"vault: {len(d['expired'])} original(s) past retention deleted")
        return "\n".join(lines)

    emit(rep.to_dict(), as_json, human)
    if rep.mismatches:
        raise SystemExit(VerifyError.exit_code)


@click.command()
@click.option("--config", "config_path", type=click.Path(), default=None, help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def stats(config_path, as_json):
    """Disk use before and now (outputs, vault, catalog, web cache), savings per rule, and fallbacks per reason."""
    from ..web.settings import cache_dir_of
    from .accounting import disk_accounting
    from .db import open_catalog

    cfg = _config(config_path)
    cat = _guard_db(lambda: open_catalog(cfg))
    data = _guard_db(lambda: disk_accounting(cat, cfg.resolved_vault_dir(), cache_dir_of(cfg)))

    def human(d):
        n = d["now"]
        lines = [f"disk: {human_bytes(d['bytes_before'])} before -> {human_bytes(d['bytes_now'])} now "
                 f"({d['change_fraction'] * 100:+.1f}%): outputs {human_bytes(n['outputs'])}, "
                 f"vault {human_bytes(n['vault'])}, catalog {human_bytes(n['catalog'])}, "
                 f"web cache {human_bytes(n['web_cache'])}"]
        lines.append(f"{'rule':<20} {'action':<10} {'files':>6} {'before':>11} {'after':>11} {'saved':>7}")
        for g in d["by_rule"]:
            lines.append(f"{g['rule']:<20} {g['action']:<10} {g['files']:>6} {human_bytes(g['bytes_before']):>11} "
                         f"{human_bytes(g['bytes_after']):>11} {g['saved_fraction'] * 100:>6.1f}%")
        t = d["total"]
        lines.append(f"{'total':<31} {t['files']:>6} {human_bytes(t['bytes_before']):>11} {human_bytes(t['bytes_after']):>11} "
                     f"{t['saved_fraction'] * 100:>6.1f}%")
        for f in d["by_fallback_reason"]:
            lines.append(f"fell back ({f['files']} file(s), {human_bytes(f['bytes_before'])}, rules "
                         f"{', '.join(f['rules'])}): {f['reason']}")
        lines.append("states: " + ", ".join(f"{k} {v}" for k, v in sorted(d["states"].items())))
        return "\n".join(lines)

    emit(data, as_json, human)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--add", "add", multiple=True, help="tag to add (e.g. legal-hold); repeatable")
@click.option("--remove", "remove", multiple=True, help="tag to remove; repeatable")
@click.option("--config", "config_path", type=click.Path(), default=None, help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def tag(paths, add, remove, config_path, as_json):
    """Show or change catalog tags of paths; 'legal-hold' keeps originals and their vault copies."""
    from . import queries as q
    from .db import open_catalog

    cfg = _config(config_path)
    cat = _guard_db(lambda: open_catalog(cfg))
    out = {}

    def run():
        with cat.session() as s:
            for p in paths:
                ap = os.path.abspath(p)
                for t in add:
                    q.add_tag(s, ap, t)
                for t in remove:
                    q.remove_tag(s, ap, t)
                out[ap] = q.tags_for(s, ap)

    _guard_db(run)
    emit(out, as_json, lambda d: "\n".join(f"{p}: {', '.join(t) or '-'}" for p, t in d.items()))
