"""The catalog's commands: ``ls`` (find), ``show`` (one file), ``status`` (the daemon's queue,
rates, last errors), ``forget`` (``archiver.work.forget``), ``verify`` (scrub), ``stats`` and ``tag``.

None of them but ``verify`` decodes; they import no torch and no detectors, so the read-only ones
answer in well under a second.
"""

from __future__ import annotations

import fcntl
import os

import click

from ...errors import SafetyError, UsageError, VerifyError
from ..core import with_core
from ..output import emit, human_bytes, progress


def _row(r) -> dict:
    from ...catalog.queries import fallback_reason  # heavy: sqlalchemy (catalog), not loaded by archiver --help

    return {"id": r.id, "path": r.path, "state": r.state, "rule": r.rule, "action": r.action, "codec": r.codec,
            "reason": (r.reasons or [None])[0], "fallback": fallback_reason(r.reasons), "error": r.error,
            "size_before": r.size, "size_after": r.compressed_size, "compressed_path": r.compressed_path,
            "score": r.score, "target": r.target_score,
            "original_status": r.original_status, "updated_at": r.updated_at}


def _when(text: str | None, name: str):
    if not text:
        return None
    from ...work.restore import parse_time  # heavy: sqlalchemy (work), not loaded by archiver --help

    try:
        return parse_time(text)
    except Exception:  # noqa: BLE001
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
@with_core(guard_db=False)
def ls(pattern, state, rule, codec, action, since, until, all_versions, limit, as_json, core):
    """List catalog entries (PATTERN: a path glob, '*' within a directory, '**' across)."""
    from ...catalog import queries as q  # heavy: sqlalchemy (catalog), not loaded by archiver --help

    s_, u_ = _when(since, "since"), _when(until, "until")
    if pattern and not pattern.startswith("/") and os.sep in pattern:
        pattern = os.path.abspath(pattern)
    cat = core.catalog
    with cat.session() as s:
        rows = q.list_versions(s, status=state, rule=rule, codec=codec, action=action, pattern=pattern,
                               since=s_, until=u_, all_versions=all_versions, limit=limit)
        if not state and not all_versions:
            rows = [r for r in rows if r.state != "forgotten"]
        data = [_row(r) for r in rows]
        total = q.file_count(s) if not data else None

    def human(d):
        lines = []
        for r in d["entries"]:
            size = f"{human_bytes(r['size_before'] or 0)} -> {human_bytes(r['size_after'] or 0)}" if r["size_after"] else ""
            why = r["error"] or r["fallback"] or r["reason"] or ""
            looks = f"  looks {r['score']:.0f}/{r['target']:g}" if r["score"] is not None and r["target"] is not None else ""
            lines.append(f"{r['state']:<9} {r['action'] or '-':<9} {r['rule'] or '-':<15} {r['path']}"
                         + (f"  {size}" if size else "") + looks + (f"  ({why})" if why else ""))
        lines.append(f"{len(d['entries'])} entr{'y' if len(d['entries']) == 1 else 'ies'} in catalog {d['catalog']}")
        if d["catalog_files"] == 0:
            lines[-1] += " (empty: nothing was archived with it; wrong ARCHIVER_HOME or --config?)"
        elif not d["entries"]:
            lines[-1] += f" (it knows {d['catalog_files']} file(s); none matches)"
        return "\n".join(lines)

    emit({"entries": data, "catalog": core.catalog_place, "catalog_files": total}, as_json, human)


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


def when_text(at) -> str:
    """A catalog time as people read it: to the second, in UTC ('-' when none)."""
    if at is None:
        return "-"
    return (at.strftime("%Y-%m-%d %H:%M:%S") if hasattr(at, "strftime") else str(at)[:19].replace("T", " ")) + " UTC"


def _value_text(v, limit: int = 160) -> str:
    if isinstance(v, dict):
        text = ", ".join(f"{k.replace('_', ' ')} {_value_text(x, 60)}" for k, x in v.items() if x not in (None, "", [], {}))
    elif isinstance(v, (list, tuple)):
        text = "; ".join(_value_text(x, 80) for x in v)
    elif isinstance(v, float):
        text = f"{v:.4g}"
    else:
        text = str(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_line(e: dict) -> str:
    """One catalog event as a line: when, what, the state it moved to, and its details in words
    ("2026-12-04 10:31:07 UTC  committed (verified -> committed): disposition replace, ...")."""
    moved = f" ({e.get('from') or 'new'} -> {e['to']})" if e.get("to") and e.get("from") != e.get("to") else ""
    detail = {k: v for k, v in (e.get("detail") or {}).items() if v not in (None, "", [], {})}
    words = ", ".join(f"{k.replace('_', ' ')} {_value_text(v)}" for k, v in detail.items())
    return f"{when_text(e['at'])}  {e['kind'].replace('_', ' ')}{moved}" + (f": {words}" if words else "")


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@with_core(guard_db=False)
def show(target, as_json, core):
    """Everything about one file (PATH or catalog ID): rule, reasons, codec, sizes, quality, events."""
    from ...catalog import queries as q  # heavy: sqlalchemy (catalog), not loaded by archiver --help

    key = target if target.isdigit() or target.startswith("/") else os.path.abspath(target)
    cat = core.catalog
    with cat.session() as s:
        vs = q.versions_for_target(s, key)
        out = []
        for r in vs:
            d = {c.name: getattr(r, c.name) for c in r.__table__.columns}
            d["fallback"] = q.fallback_reason(r.reasons)
            d["tags"] = q.tags_for(s, r.path)
            d["events"] = [{"at": e.at, "kind": e.kind, "from": e.from_state, "to": e.to_state, "detail": e.detail}
                           for e in q.events_for(s, r)]
            out.append(d)
    if not out:
        raise core.not_in_catalog(target)

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
                         + (f"; vault until {when_text(v['vault_expires_at'])}" if v["vault_path"] else ""))
            if v.get("artifact_of"):
                lines.append(f"  copy      an exact copy of catalog id {v['artifact_of']}: shares its stored file "
                             "(no bytes of its own; restore still gives this file its own path, mode and time)")
            if v["tags"]:
                lines.append(f"  tags      {', '.join(v['tags'])}")
            if v["error"]:
                lines.append(f"  error     {v['error']}")
            for e in v["events"]:
                lines.append("  " + event_line(e))
        return "\n".join(lines)

    emit({"versions": out}, as_json, human)


@click.command()
@click.option("--errors", "n_errors", type=click.IntRange(0), default=10, show_default=True, help="last errors shown")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@with_core(guard_db=False)
def status(n_errors, as_json, core):
    """The daemon: running or not, its queue, files in hand, rates and the last errors (from the catalog)."""
    from ...catalog.queries import daemon_activity  # heavy: sqlalchemy (catalog), not loaded by archiver --help
    from ...service.lock import lock_path_for  # heavy: sqlalchemy (service), not loaded by archiver --help

    cfg, cat = core.cfg, core.catalog
    lock = lock_path_for(cfg.resolved_catalog_url(), cfg.state_dir)
    running, pid = _lock_holder(lock)
    with cat.session() as s:
        queue, in_hand, rates, errs, retrying = daemon_activity(s, n_errors)
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
@click.option("--ignore-vault", is_flag=True,
              help="forget lost entries whose original the vault still holds too (restore it first instead: "
                   "`archiver restore PATH`); that vault copy is then deleted when its retention ends")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
@with_core(guard_db=False)
def forget(ctx, targets, reason, force, ignore_vault, as_json, core):
    """Forget lost files (PATH, ID or GLOB): verify, restore and stats stop counting them; the catalog
    row and its events stay for audit; no file on disk is touched. Refused while the vault still
    holds the original of a lost file (restore it first). See docs/operations.md."""
    from ...work.forget import forget as do_forget  # heavy: sqlalchemy (work), not loaded by archiver --help

    cat = core.catalog
    res = do_forget(cat, list(targets), vault=core.vault, reason=reason, force=force, ignore_vault=ignore_vault)
    emit({"results": [r.to_dict() for r in res]}, as_json,
         lambda d: "\n".join(_forget_line(r) for r in d["results"]))
    if any(r.status == "refused" for r in res):
        ctx.exit(SafetyError.exit_code)


def _forget_line(r: dict) -> str:
    """One line per entry: what was found wrong and, for a refusal, the way out."""
    said = "; ".join(r["problems"] + ([r["message"]] if r["message"] else []))
    return f"{r['status']:<9} {r['path']}" + (f": {said}" if said else "")


@click.command()
@click.option("--sample", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0, show_default=True,
              help="fraction of committed files to check (random)")
@click.option("--no-decode", is_flag=True, help="only re-hash; do not re-decode")
@click.option("--expire-vault", is_flag=True,
              help="then delete vaulted originals past retention (never under legal hold, never the last good copy)")
@click.option("--config", "config_path", type=click.Path(), default=None, help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@with_core
def verify(sample, no_decode, expire_vault, as_json, core):
    """Scrub: re-hash compressed files and vaulted originals, re-decode and compare; non-zero exit on any mismatch."""
    from ...work.verify import expire_vault as do_expire, verify as do_verify  # heavy: sqlalchemy (work), not loaded by archiver --help

    cat = core.catalog
    vault = core.vault
    found = []

    def problem(m: dict) -> None:  # each on its own line as found (stdout), between the summaries (stderr)
        found.append(m)
        if not as_json:
            click.echo(f"MISMATCH {m['path']} (id {m['id']}): {m['problem']}")
            if m.get("rescue"):
                click.echo(f"         -> {m['rescue']['line']}")

    rep = core.guard(lambda: do_verify(
        cat, vault=vault, codecs=core.codecs, sample=sample, decode=not no_decode, on_problem=problem,
        progress=lambda it: progress(it, desc="verify", enabled=not as_json,
                                     status=lambda: f"{len(found):,} problem{'' if len(found) == 1 else 's'}")))
    if expire_vault:
        res = core.guard(lambda: do_expire(cat, vault))
        rep.expired, rep.held = res.gone, res.held

    def human(d):
        lines = []  # the mismatches were printed as they were found: once is enough in a cron log
        lines += [f"warning  {m['path']} (id {m['id']}): {m['problem']}" for m in d["warnings"]]
        lines.append(f"checked {d['checked']} of {d['total']}: {d['ok']} ok, {len(d['mismatches'])} mismatch(es)")
        if d.get("expired"):
            lines.append(f"vault: {len(d['expired'])} original(s) past retention deleted")
        for h in d.get("held") or []:
            lines.append(f"vault: kept past its retention ({h['expired_on']}): {h['path']} (id {h['id']}): {h['why']}")
        return "\n".join(lines)

    emit(rep.to_dict(), as_json, human)
    if rep.mismatches:
        raise SystemExit(VerifyError.exit_code)


def _against(fraction: float) -> str:
    if abs(fraction) < 0.0005:
        return "the same as before"
    return f"{abs(fraction) * 100:.1f}% {'more' if fraction > 0 else 'less'} than before"


def disk_lines(d: dict) -> list[str]:
    """``stats``' disk figures in words: the originals before, the disk now (and why it may be
    more for now: the vault), and the disk once the vault's retention ends, with its date."""
    n, later = d["now"], d.get("after_vault") or {}
    lines = [f"before:  {human_bytes(d['bytes_before'])} of originals ({d['total']['files']} file(s))",
             f"now:     {human_bytes(d['bytes_now'])} on disk, {_against(d['change_fraction'])}: archived files "
             f"{human_bytes(n['outputs'])}, vault {human_bytes(n['vault'])}, catalog {human_bytes(n['catalog'])}, "
             f"web cache (the dashboard's pictures) {human_bytes(n['web_cache'])}"]
    if later.get("until"):
        lines.append(f"later:   the vault keeps {later['files']} original(s) until {later['until']} (their retention); "
                     f"from then on {human_bytes(later['bytes'])} on disk, {_against(later['change_fraction'])}")
    elif later.get("files"):
        lines.append(f"later:   {later['files']} original(s) past retention leave the vault at the next expiry "
                     f"(daemon, or verify --expire-vault): then {human_bytes(later['bytes'])} on disk, "
                     f"{_against(later['change_fraction'])}")
    if later.get("kept_forever"):
        k = later["kept_forever"]
        lines.append(f"         {k['files']} original(s) ({human_bytes(k['bytes'])}) stay in the vault with no end "
                     "(legal hold or no retention)")
    return lines


@click.command()
@click.option("--config", "config_path", type=click.Path(), default=None, help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@with_core
def stats(as_json, core):
    """Disk use before and now (outputs, vault, catalog, web cache), savings per rule, and fallbacks per reason."""
    from ...catalog.accounting import disk_accounting  # heavy: sqlalchemy (catalog), not loaded by archiver --help
    from ..web.settings import cache_dir_of  # heavy: the web dashboard (app.web, ~6 ms), not loaded by archiver --help

    cfg = core.cfg
    cat = core.catalog
    data = core.guard(lambda: disk_accounting(cat, cfg.resolved_vault_dir(), cache_dir_of(cfg)))

    def human(d):
        lines = disk_lines(d)
        lines.append("per rule: archived files against their originals (vault, catalog and cache not included):")
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
        if d.get("shared", {}).get("files"):
            lines.append(f"exact copies: {d['shared']['files']} file(s) share {d['shared']['stored_files']} stored "
                         "file(s) of other rows (no artifact bytes of their own)")
        lines.append("states: " + ", ".join(f"{k} {v}" for k, v in sorted(d["states"].items())))
        return "\n".join(lines)

    emit(data, as_json, human)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--add", "add", multiple=True, help="tag to add (e.g. legal-hold); repeatable")
@click.option("--remove", "remove", multiple=True, help="tag to remove; repeatable")
@click.option("--config", "config_path", type=click.Path(), default=None, help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@with_core
def tag(paths, add, remove, as_json, core):
    """Show or change catalog tags of paths; 'legal-hold' keeps originals and their vault copies."""
    from ...catalog import queries as q  # heavy: sqlalchemy (catalog), not loaded by archiver --help

    cat = core.catalog
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

    core.guard(run)
    emit(out, as_json, lambda d: "\n".join(f"{p}: {', '.join(t) or '-'}" for p, t in d.items()))
