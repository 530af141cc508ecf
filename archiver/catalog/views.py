"""The operator's read-only views of the catalog: ``ls`` (find), ``show`` (one file),
``status`` (the daemon's queue, rates, last errors), and ``forget`` (see ``forget.py``).

All of them read the catalog; none touches a file on disk. They import no torch and no
detectors, so they answer in well under a second.
"""

from __future__ import annotations

import datetime as dt
import os

import click

from ..errors import NotInCatalogError
from ..output import emit, human_bytes


def _catalog():
    from ..config import load_config
    from .db import open_catalog

    cfg = load_config()
    return cfg, open_catalog(cfg)


def _row(r) -> dict:
    from .queries import fallback_reason

    return {"id": r.id, "path": r.path, "state": r.state, "rule": r.rule, "action": r.action, "codec": r.codec,
            "reason": (r.reasons or [None])[0], "fallback": fallback_reason(r.reasons), "error": r.error,
            "size_before": r.size, "size_after": r.compressed_size, "compressed_path": r.compressed_path,
            "score": r.score, "target": r.target_score,
            "original_status": r.original_status, "updated_at": r.updated_at}


def _when(text: str | None, name: str):
    if not text:
        return None
    from ..work.restore import parse_time

    try:
        return parse_time(text)
    except Exception:  # noqa: BLE001
        from ..errors import UsageError

        raise UsageError(f"--{name}: not an ISO date/time: {text!r}") from None


@click.command(name="ls")
@click.argument("pattern", required=False)
@click.option("--status", "state", type=click.Choice(["committed", "skipped", "failed", "forgotten", "discovered",
                                                     "classified", "encoded", "verified"]),
              help="only entries in this state (skipped and failed files are listed with why)")
@click.option("--rule", help="only entries decided by this policy rule")
@click.option("--codec", help="only entries stored with this codec")
@click.option("--action", type=click.Choice(["diffusion", "avif", "jxl", "lossless", "keep"]),
              help="only entries whose codec (after fallbacks) was this")
@click.option("--since", help="changed at or after this ISO date/time (UTC unless a zone is given)")
@click.option("--until", help="changed at or before this ISO date/time")
@click.option("--all-versions", is_flag=True, help="every version, not only the newest per path")
@click.option("--limit", type=click.IntRange(1), help="at most N entries")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def ls(pattern, state, rule, codec, action, since, until, all_versions, limit, as_json):
    """List catalog entries (PATTERN: a path glob, '*' within a directory, '**' across)."""
    from . import queries as q

    s_, u_ = _when(since, "since"), _when(until, "until")
    if pattern and not pattern.startswith("/") and os.sep in pattern:
        pattern = os.path.abspath(pattern)
    _, cat = _catalog()
    with cat.session() as s:
        rows = q.list_versions(s, status=state, rule=rule, codec=codec, action=action, pattern=pattern,
                               since=s_, until=u_, all_versions=all_versions, limit=limit)
        if not state and not all_versions:
            rows = [r for r in rows if r.state != "forgotten"]
        data = [_row(r) for r in rows]

    def human(d):
        lines = []
        for r in d["entries"]:
            size = f"{human_bytes(r['size_before'] or 0)} -> {human_bytes(r['size_after'] or 0)}" if r["size_after"] else ""
            why = r["error"] or r["fallback"] or r["reason"] or ""
            looks = f"  looks {r['score']:.0f}/{r['target']:g}" if r["score"] is not None and r["target"] is not None else ""
            lines.append(f"{r['state']:<9} {r['action'] or '-':<9} {r['rule'] or '-':<15} {r['path']}"
                         + (f"  {size}" if size else "") + looks + (f"  ({why})" if why else ""))
        lines.append(f"{len(d['entries'])} entr{'y' if len(d['entries']) == 1 else 'ies'}")
        return "\n".join(lines)

    emit({"entries": data}, as_json, human)


def candidate_line(c: dict) -> str:
    """One codec the search tried, in words: what it made and its score, or why it lost."""
    knob = ", ".join(f"{k} {v}" for k, v in (c.get("knob") or {}).items())
    if c.get("ok"):
        score = f", SSIMULACRA2 {c['score']:.1f}" if c.get("score") is not None else ""
        mark = "  <- stored" if c.get("chosen") else "  (larger)"
        return f"{c['codec']}: {human_bytes(c['size'])}" + (f" at {knob}" if knob else "") + score + mark
    if c.get("beaten"):
        return f"{c['codec']}: larger: {c.get('why')}"
    return f"{c['codec']}: not used: {c.get('why') or 'failed'}"


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def show(target, as_json):
    """Everything about one file (PATH or catalog ID): rule, reasons, codec, sizes, quality, events."""
    from . import queries as q

    key = target if target.isdigit() or target.startswith("/") else os.path.abspath(target)
    _, cat = _catalog()
    with cat.session() as s:
        vs = q.versions_for_target(s, key)
        if not vs:
            raise NotInCatalogError(f"{target}: not in the catalog")
        out = []
        for r in vs:
            d = {c.name: getattr(r, c.name) for c in r.__table__.columns}
            d["fallback"] = q.fallback_reason(r.reasons)
            d["tags"] = q.tags_for(s, r.path)
            d["events"] = [{"at": e.at, "kind": e.kind, "from": e.from_state, "to": e.to_state, "detail": e.detail}
                           for e in q.events_for(s, r)]
            out.append(d)

    def human(d):
        lines = []
        for v in d["versions"]:
            lines.append(f"{v['path']} (catalog id {v['id']}, {v['state']})")
            lines.append(f"  rule      {v['rule'] or '-'} -> {v['action'] or '-'}"
                         + (f", fell back: {v['fallback']}" if v["fallback"] else ""))
            for r in v["reasons"] or []:
                lines.append(f"  why       {r}")
            lines.append(f"  codec     {v['codec'] or '-'}" + (f" ({v['backbone']} {str(v['backbone_digest'])[:12]})"
                                                               if v["backbone"] else ""))
            if v["size"] is not None:
                lines.append(f"  size      {human_bytes(v['size'])} -> "
                             f"{human_bytes(v['compressed_size']) if v['compressed_size'] is not None else '-'}"
                             + (f", {v['bpp']:.3f} bpp" if v["bpp"] else ""))
            if v.get("score") is not None:
                lines.append(f"  looks     SSIMULACRA2 {v['score']:.1f}"
                             + (f" (target {v['target_score']:g})" if v.get("target_score") is not None else "")
                             + (f", protected regions {v['region_score']:.1f}" if v.get("region_score") is not None else "")
                             + f"  [{v.get('score_metric') or 'ssimulacra2'}]")
            if v["psnr"] is not None:
                lines.append(f"  quality   PSNR {v['psnr']:.2f} dB, MS-SSIM {v['ms_ssim'] or 0:.4f}"
                             + (f", protected regions {v['region_psnr']:.2f} dB" if v["region_psnr"] else ""))
            for c in v.get("candidates") or []:
                lines.append("  tried     " + candidate_line(c))
            lines.append(f"  output    {v['compressed_path'] or '-'}; original {v['original_status'] or '-'}"
                         + (f"; vault until {v['vault_expires_at']}" if v["vault_path"] else ""))
            if v["tags"]:
                lines.append(f"  tags      {', '.join(v['tags'])}")
            if v["error"]:
                lines.append(f"  error     {v['error']}")
            for e in v["events"]:
                lines.append(f"  {str(e['at'])[:19]}  {e['kind']}" + (f" {e['from']}->{e['to']}" if e["to"] else "")
                             + (f" {e['detail']}" if e["detail"] else ""))
        return "\n".join(lines)

    emit({"versions": out}, as_json, human)


@click.command()
@click.option("--errors", "n_errors", type=click.IntRange(0), default=10, show_default=True, help="last errors shown")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(n_errors, as_json):
    """The daemon: running or not, its queue, files in hand, rates and the last errors (from the catalog)."""
    from sqlalchemy import func, select

    from ..service.lock import lock_path_for
    from .models import COMMITTED, FAILED, SKIPPED, FileVersion, WorkQueue, utcnow

    cfg, cat = _catalog()
    lock = lock_path_for(cfg.resolved_catalog_url(), cfg.state_dir)
    running, pid = _lock_holder(lock)
    now = utcnow()
    with cat.session() as s:
        queue = dict(s.execute(select(WorkQueue.state, func.count()).group_by(WorkQueue.state)).all())
        in_hand = [{"path": p, "claimed_by": b, "since": a} for p, b, a in s.execute(
            select(WorkQueue.path, WorkQueue.claimed_by, WorkQueue.claimed_at)
            .where(WorkQueue.claimed_by.is_not(None), WorkQueue.state == "claimed").limit(50))]
        rates = {}
        for label, minutes in (("last_10_min", 10), ("last_hour", 60), ("last_day", 1440)):
            n, b = s.execute(select(func.count(), func.sum(func.coalesce(FileVersion.size, 0))).where(
                FileVersion.state == COMMITTED, FileVersion.committed_at >= now - dt.timedelta(minutes=minutes))).one()
            rates[label] = {"files": int(n), "bytes": int(b or 0), "files_per_min": round(n / minutes, 2)}
        errs = [{"path": p, "state": st, "error": e, "at": t} for p, st, e, t in s.execute(
            select(FileVersion.path, FileVersion.state, FileVersion.error, FileVersion.updated_at)
            .where(FileVersion.state.in_((FAILED, SKIPPED)), FileVersion.error.is_not(None))
            .order_by(FileVersion.updated_at.desc()).limit(n_errors))]
        retrying = [{"path": p, "attempts": a, "error": e} for p, a, e in s.execute(
            select(WorkQueue.path, WorkQueue.attempts, WorkQueue.last_error)
            .where(WorkQueue.last_error.is_not(None), WorkQueue.state != "done").limit(n_errors))]
    data = {"daemon": {"running": running, "pid": pid, "lock": str(lock)}, "queue": queue, "in_hand": in_hand,
            "rates": rates, "last_errors": errs, "retrying": retrying}

    def human(d):
        dm = d["daemon"]
        pid = f" (pid {dm['pid']})" if dm["pid"] else ""
        lines = [f"daemon: running{pid}" if dm["running"] else "daemon: not running"]
        lines.append("queue: " + (", ".join(f"{k} {v}" for k, v in sorted(d["queue"].items())) or "empty"))
        for w in d["in_hand"]:
            lines.append(f"  in hand: {w['path']} ({w['claimed_by']}, since {str(w['since'])[:19]})")
        r = d["rates"]
        lines.append("archived: " + ", ".join(f"{k.replace('_', ' ')} {v['files']} ({human_bytes(v['bytes'])})"
                                              for k, v in r.items()))
        for e in d["retrying"]:
            lines.append(f"  retrying ({e['attempts']} attempt(s)): {e['path']}: {e['error']}")
        for e in d["last_errors"]:
            lines.append(f"  {e['state']}: {e['path']}: {e['error']}")
        return "\n".join(lines)

    emit(data, as_json, human)


def _lock_holder(path) -> tuple[bool, int | None]:
    """Whether a daemon holds its lock (tested without taking it for long), and its pid."""
    import fcntl

    if not os.path.exists(path):
        return False, None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return True, int(raw) if raw.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, None
    finally:
        os.close(fd)


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--reason", help="why (recorded in the catalog's event log)")
@click.option("--force", is_flag=True, help="forget entries whose archived data is still intact too")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def forget(ctx, targets, reason, force, as_json):
    """Forget lost files (PATH, ID or GLOB): verify, restore and stats stop counting them; the catalog
    row and its events stay for audit; no file on disk is touched. See docs/operations.md."""
    from ..storage.vault import Vault
    from .forget import forget as do_forget

    cfg, cat = _catalog()
    res = do_forget(cat, list(targets), vault=Vault(cfg.resolved_vault_dir()), reason=reason, force=force)
    emit({"results": [r.to_dict() for r in res]}, as_json,
         lambda d: "\n".join(f"{r['status']:<9} {r['path']}" + (f": {'; '.join(r['problems'])}" if r["problems"] else "")
                             + (f" ({r['message']})" if r["message"] else "") for r in d["results"]))
    if any(r.status == "refused" for r in res):
        from ..errors import SafetyError

        ctx.exit(SafetyError.exit_code)
