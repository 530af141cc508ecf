"""``archiver classify`` and ``archiver policy check|show``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from ...errors import ArchiverError, InputError, PolicyError
from ..core import with_core
from ..output import emit, progress

#: besides what archive takes (``imageio.IMAGE_SUFFIXES``), classify also looks at AVIF and JPEG XL files
EXTRA_EXTS = {".jxl", ".avif"}


def iter_images(paths) -> list[Path]:
    """Files named on the command line as given; directories walked recursively for images."""
    from ...imageio import IMAGE_SUFFIXES  # heavy: archiver.imageio (PIL), not loaded by archiver --help

    exts = set(IMAGE_SUFFIXES) | EXTRA_EXTS
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts))
        else:
            out.append(p)
    return out


def _human_decision(d: dict) -> str:
    lines = [f"{d['path']}: {d['action'].upper()} (rule {d['rule']})"]
    for r in d["reasons"]:
        lines.append(f"    why: {r}")
    for name, ev in d["evidence"].items():
        regs = ev["regions"]
        extra = ""
        if regs:
            shown = ", ".join("(" + ",".join(map(str, b)) + ")" for b in regs[:4])
            extra = f"; regions {shown}" + (f" +{len(regs) - 4} more" if len(regs) > 4 else "")
        lines.append(f"    {name:<8} score {ev['score']:.2f}: {ev['reason']}{extra}")
    p = d["params"]
    if d["codecs"]:
        how = [f"tries {' -> '.join(d['codecs'])} -> keep"]
        if p.get("bpp") is not None:
            how.append(f"diffusion at {p['bpp']} bpp")
        if p.get("floor"):
            how.append(f"floor {p['floor']}")
        if p.get("budget"):
            how.append(f"budget {p['budget']}")
        lines.append("    " + ", ".join(how) + f", original -> {p.get('original')}")
    return "\n".join(lines)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--policy", "policy_path", type=click.Path(), default=None, help="policy file or shipped policy name (default: the config's policy, else the shipped default.yaml)")
@click.option("--tag", "tags", multiple=True, help="catalog tag to assume for every file (e.g. legal-hold); repeatable")
@click.option("--all", "run_all", is_flag=True, help="run every classifier, not only those the rules needed")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
@with_core
def classify(ctx, paths, policy_path, tags, run_all, as_json, core):
    """Decide per image what the policy would do, with the rule that fired, why, and the regions found."""
    from ...policy.engine import load_policy  # heavy: yaml (policy), not loaded by archiver --help

    policy = load_policy(policy_path or core.cfg.policy)
    files = iter_images(paths)
    if not files:
        raise InputError(f"no images found in {', '.join(paths)}")
    results, errors = [], []
    for f in progress(files, total=len(files), desc="classify", enabled=not as_json and len(files) > 1):
        try:
            d = policy.decide(f, tags=tags, run_all=run_all).to_dict()
        except ArchiverError as e:
            errors.append({"path": str(f), "error": str(e), "kind": type(e).__name__})
            if not as_json:
                click.echo(f"{f}: ERROR {e}", err=True)
            continue
        results.append(d)
        if not as_json:
            click.echo(_human_decision(d))
    summary = dict(Counter(d["action"] for d in results))
    if as_json:
        emit({"policy": policy.name, "source": policy.source, "results": results, "errors": errors,
              "summary": {"files": len(files), "errors": len(errors), "actions": summary}}, True)
    else:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.items()))
        click.echo(f"{len(results)} classified with policy '{policy.name}': {counts or 'none'}" + (f"; {len(errors)} failed" if errors else ""))
    if errors:
        ctx.exit(InputError.exit_code)


@click.group()
def policy():
    """Check and show policy files."""


@policy.command()
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def check(ctx, file, as_json):
    """Validate a policy file: every problem with its line number."""
    from ...policy.engine import load_policy  # heavy: yaml (policy), not loaded by archiver --help

    try:
        p = load_policy(file)
    except PolicyError as e:
        problems = getattr(e, "problems", None) or [{"file": file, "line": None, "message": str(e)}]
        if as_json:
            emit({"file": file, "ok": False, "problems": problems}, True)
            ctx.exit(e.exit_code)
        raise
    info = p.describe()
    emit(
        {"file": file, "ok": True, "policy": info},
        as_json,
        lambda d: f"{file}: OK - policy '{p.name}', {len(p.rules)} rules, default {p.default.action}; classifiers used: {', '.join(sorted(p.needs)) or 'none'}",
    )


@policy.command()
@click.argument("file", required=False, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def show(file, as_json):
    """Print a policy's rules in order (default: the shipped default policy)."""
    from ...policy.engine import load_policy  # heavy: yaml (policy), not loaded by archiver --help

    p = load_policy(file)
    info = p.describe()

    def human(d):
        lines = [f"policy '{d['name']}' ({d['source']})"]
        for i, r in enumerate(d["rules"], 1):
            lines.append(f"  {i}. {r['name']}: when {r['when']} -> {r['action']} {r['params']}")
        lines.append(f"  otherwise -> {d['default']['action']} {d['default']['params']}")
        return "\n".join(lines)

    emit(info, as_json, human)
