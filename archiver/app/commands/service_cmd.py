"""``archiver daemon`` and ``archiver migrate``."""

from __future__ import annotations

import logging
import sys

import click

from ...errors import UsageError
from ..core import with_core
from ..output import emit, human_bytes, progress


class WorkersParam(click.ParamType):
    """``--workers``: a number from 1 to 256, or ``auto`` (resolved by the config: ``auto_workers``)."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or str(value).strip().lower() == "auto":
            return value if isinstance(value, int) else "auto"
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a number of workers (1-256) nor 'auto'", param, ctx)
        if not 1 <= n <= 256:
            self.fail(f"{n} is not in the range 1-256 (or 'auto')", param, ctx)
        return n


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="config file (default: the usual search path)")
@click.option("--json-logs", is_flag=True, help="log one JSON object per line (for journald / log shippers)")
@click.option("--rebind-roots", is_flag=True, help="accept roots that moved to another filesystem (re-record their devices)")
@click.option("--executor", type=click.Choice(["process", "thread"]), default="process", show_default=True,
              help="worker processes (CPU-heavy encodes) or threads (light policies, debugging)")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
@click.option("--json", "as_json", is_flag=True, help="print the exit summary as JSON")
def daemon(config_path, json_logs, rebind_roots, executor, verbose, as_json):
    """Watch the configured roots and archive new images as they settle.

    SIGTERM/SIGINT: stop taking work, finish the files in hand, exit 0 (a second signal
    abandons them; the next start resumes them). SIGHUP: reload the config file."""
    from ...service.daemon import Daemon  # heavy: sqlalchemy (service), not loaded by archiver --help
    from ...service.logs import setup_logging  # heavy: sqlalchemy (service), not loaded by archiver --help

    setup_logging(json_logs or as_json, logging.DEBUG if verbose else logging.INFO)
    from ..web.server import start_with_daemon  # heavy: the web dashboard (app.web, ~6 ms), not loaded by archiver --help

    d = Daemon(config_path, rebind_roots=rebind_roots, executor=executor, start_web=start_with_daemon)
    rc = d.run()
    if as_json:
        emit({"exit_code": rc}, True)
    sys.exit(rc)


def _on_signal(count: int) -> None:
    """What migrate's first and second SIGINT/SIGTERM mean, told on stderr."""
    msg = ("\narchiver: stopping after the files in hand (again to abandon them; "
           "rerun the same command to resume)") if count == 1 else "\narchiver: abandoning files in hand"
    print(msg, file=sys.stderr, flush=True)


def _not_taken_line(groups: list[dict]) -> str:
    """``2 .dng (camera raw: kept untouched), 1 .txt (not an image)`` (``--json``: every group with examples)."""
    return ", ".join(f"{g['files']} {g['type']} ({g['reason']})" for g in groups)


def _batching_line(b: dict) -> str:
    """``batched device work on cuda (8 files at once, batches of up to 16): 40 batches (analyse
    12, decode 28), mean 5.2 files, largest 8, device thread busy 71%; GPU utilisation mean 64%, max 97%``."""
    kinds = ", ".join(f"{k} {v['batches']}" for k, v in sorted(b["by_kind"].items()))
    gpu = b.get("gpu_utilisation")
    busy = f", device thread busy {b['busy_share']:.0%}" if b.get("busy_share") is not None else ""
    return (f"batched device work on {b['device']} ({b['files_at_once']} files at once, batches of up to "
            f"{b['max_batch']}): {b['batches']} batches" + (f" ({kinds})" if kinds else "")
            + (f", mean {b['mean_batch']:.1f} files, largest {b['largest']}" if b["batches"] else "") + busy + "; "
            + (f"GPU utilisation mean {gpu['mean_pct']:.0f}%, max {gpu['max_pct']:.0f}%" if gpu else "GPU utilisation: no GPU"))


def _plan_human(r: dict) -> str:
    lines = [f"dry run: {r['files']} file(s) under {', '.join(r['roots'])} with policy {r['policy']}"
             + (f" ({r['already_archived']} more already handled by earlier runs)" if r["already_archived"] else "")]
    lines.append(f"  {'rule':<18} {'codec':<10} {'files':>6} {'before':>11} {'after':>11} {'saved':>11}")
    for e in r["rules"]:
        lines.append(f"  {e['rule']:<18} {e['action']:<10} {e['files']:>6} {human_bytes(e['bytes_before']):>11} "
                     f"{human_bytes(e['bytes_after_predicted']):>11} {human_bytes(e['savings_predicted']):>11}")
    lines.append(f"  total: {human_bytes(r['bytes_before'])} -> {human_bytes(r['bytes_after_predicted'])}, "
                 f"saving {human_bytes(r['savings_predicted'])} ({r['savings_ratio']:.0%})")
    if r["codecs"]:
        lines.append("  codecs: " + ", ".join(f"{k} {v['files']} ({v['share']:.0%})" for k, v in r["codecs"].items()))
    for e in r["rules"]:
        ex = e["examples"][0]
        lines.append(f"  {e['rule']} -> {e['action']}: e.g. {ex['path']}" + (f" ({ex['why']})" if ex["why"] else ""))
    fell = [f for f in r.get("predictions", []) if any(not a["ok"] and not a.get("beaten") for a in f["attempts"])]
    if fell:
        lines.append(f"  {len(fell)} file(s) would not get their rule's first codec:")
        lines += [f"    {f['path']}: {f['why']}" for f in fell[:20]]
        if len(fell) > 20:
            lines.append(f"    ... and {len(fell) - 20} more (--json lists them all)")
    v = r.get("vault") or {}
    if v.get("bytes"):
        lines.append(f"  vault: the originals of {human_bytes(v['bytes'])} are kept there too until their retention "
                     "ends; then the daemon (or `archiver verify --expire-vault`) deletes them:")
        lines += [f"    {human_bytes(f['bytes'])} after {f['retention_days']} day(s), on {f['frees_on']}" for f in v["frees"]]
        lines.append(f"  disk until then: ~{human_bytes(r['bytes_after_predicted'] + v['bytes'])} "
                     f"(outputs + vault) instead of {human_bytes(r['bytes_before'])}")
    if r["unreadable"]:
        lines.append(f"  {len(r['unreadable'])} unreadable file(s) would be skipped:")
        lines += [f"    {u['path']}: {u['error']}" for u in r["unreadable"][:20]]
    if r.get("not_taken"):
        lines.append(f"  not taken: {_not_taken_line(r['not_taken'])}")
    if r["interrupted"]:
        lines.append(f"  interrupted: {r['not_planned']} file(s) not predicted")
    if r.get("batching"):
        lines.append(f"  {_batching_line(r['batching'])}")
    lines.append(f"  how: {r['method']} (--json lists every file with its codec and why)")
    lines.append("  nothing was changed")
    return "\n".join(lines)


def _run_human(r: dict) -> str:
    head = "migration interrupted" if r["interrupted"] else "migration finished"
    lines = [f"{head}: {r['files']} file(s) handled in {r['seconds']:.0f} s"
             + (f" ({r['images_per_min']:.1f} images/min)" if r.get("images_per_min") else "")
             + (f", {r['already_archived']} handled by earlier runs" if r["already_archived"] else "")]
    if r["by_outcome"]:
        lines.append("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(r["by_outcome"].items())))
    lines.append(f"  {'rule':<18} {'action':<10} {'files':>6} {'before':>11} {'after':>11} {'saved':>11}")
    for e in r["rules"]:
        lines.append(f"  {e['rule']:<18} {e['action']:<10} {e['files']:>6} {human_bytes(e['bytes_before']):>11} "
                     f"{human_bytes(e['bytes_after']):>11} {human_bytes(e['saved']):>11}")
    lines.append(f"  total: {human_bytes(r['bytes_before'])} -> {human_bytes(r['bytes_after'])}, saved {human_bytes(r['saved'])}")
    if r.get("codecs"):
        lines.append("  codecs: " + ", ".join(f"{k} {v['files']} ({v['share']:.0%})" for k, v in r["codecs"].items()))
    for fb in r.get("fallbacks", []):
        lines.append(f"  fell back ({fb['files']}): {fb['reason']}; e.g. {fb['examples'][0]}")
    if r.get("skipped"):
        lines.append(f"  {len(r['skipped'])} skipped (not archived, left as they are):")
        lines += [f"    {f['path']}: {f['error']}" for f in r["skipped"][:30]]
    if r["failures"]:
        lines.append(f"  {len(r['failures'])} failure(s):")
        lines += [f"    {f['path']}: {f['error']}" for f in r["failures"][:30]]
    if r.get("not_taken"):
        lines.append(f"  not taken: {_not_taken_line(r['not_taken'])}")
    if r.get("batching"):
        lines.append(f"  {_batching_line(r['batching'])}")
    left = r["queue_left"]
    if left.get("pending") or left.get("claimed") or r["interrupted"]:
        lines.append(f"  {left.get('pending', 0)} file(s) still queued: run the same command again to resume")
    return "\n".join(lines)


@click.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--policy", type=str, help="policy file (or a shipped policy name); default: the config's or the shipped default")
@click.option("--dry-run", is_flag=True, help="predict the codec and size of every file (the real steps, nothing written)")
@click.option("--workers", type=WorkersParam(), help="parallel workers, 1-256 or 'auto': one per core, as "
              "many as 3/4 of the memory holds (default: config 'workers', itself 'auto' by default)")
@click.option("--executor", type=click.Choice(["process", "thread", "ray"]), default="process", show_default=True,
              help="where tasks run; 'ray' uses RAY_ADDRESS (catalog must then be PostgreSQL)")
@click.option("--device", type=str, help="torch device of the diffusion codec: cpu, cuda, cuda:N or auto "
              "(default: config 'device')")
@click.option("--batch", type=click.IntRange(0, 256), metavar="N",
              help="batch the diffusion codec's encoder and decoder across up to N files in flight: the files "
                   "run in this process, --workers threads at once (default: 16 on a CUDA device, off on the CPU; "
                   "0: off)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
@with_core(overrides=("policy", "workers", "device"))
def migrate(roots, policy, dry_run, workers, executor, device, batch, as_json, core):
    """Archive existing collections under ROOT... by policy; resumable (rerun to continue).

    With a CUDA device (or --batch N) the files run in threads of this process and the
    diffusion codec's device work is batched across them; the report gives the batches and
    the GPU's utilisation."""
    from ...service import migrate as m  # heavy: sqlalchemy (service), not loaded by archiver --help
    from ...service.batched import batch_size, check_device  # heavy: the service package, not loaded by archiver --help

    cfg = core.cfg
    if cfg.policy:
        from ...policy.engine import load_policy  # heavy: yaml (policy), not loaded by archiver --help

        load_policy(cfg.policy)  # a bad policy is a clear error now, not N failures later
    if executor == "ray" and cfg.resolved_catalog_url().startswith("sqlite") and not dry_run:
        raise UsageError("--executor ray needs a catalog every node can reach: set catalog_url to PostgreSQL")
    batch = batch_size(cfg, batch, executor)
    if batch:  # the files run in this process, on its device: one clear line if there is none
        check_device(cfg.device)
    show = not as_json

    def track(iterable, *, total, desc):
        return progress(iterable, total=total, desc=desc, enabled=show)

    if dry_run:
        report = m.dry_run(roots, cfg, workers=cfg.workers, executor=executor, progress=track, on_signal=_on_signal,
                           batch=batch)
        emit(report, as_json, _plan_human)
        sys.exit(130 if report["interrupted"] else 0)
    report = m.run(roots, cfg, workers=cfg.workers, executor=executor, progress=track, on_signal=_on_signal,
                   batch=batch)
    emit(report, as_json, _run_human)
    sys.exit(130 if report["interrupted"] else (1 if report["failures"] else 0))
