"""``archiver doctor``: which config, catalog, vault and model are in use, and what is wrong.

Each check is independent and never raises: a broken catalog must not hide a full disk. A check
is ``ok``, ``warn`` (works, but look) or ``fail`` (archiving will not work); the command exits 1
when anything failed, so it can gate a deployment or a timer.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import click

from .. import codecs
from ..errors import NoCatalogError
from ..errors import UsageError
from .core import Core, with_core
from .output import emit
from .output import human_bytes


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


def _mask(url: str) -> str:
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def _config(state: dict) -> Check:
    from ..config import search_paths  # heavy: pydantic and yaml (config), not loaded by archiver --help

    try:
        cfg = state["core"].cfg
    except Exception as e:  # noqa: BLE001 - doctor reports, it does not crash
        return Check("config", "fail", str(e), {"searched": [str(p) for p in search_paths()]})
    state["cfg"] = cfg
    src = str(cfg.source) if cfg.source else "none found: built-in defaults"
    return Check("config", "ok", f"{src}; state directory {cfg.state_dir}",
                 {"file": str(cfg.source) if cfg.source else None, "state_dir": str(cfg.state_dir),
                  "searched": [str(p) for p in search_paths()] if not cfg.source else []})


def _catalog(state: dict) -> Check:
    cfg = state.get("cfg")
    if cfg is None:
        return Check("catalog", "fail", "no usable config")
    url = cfg.resolved_catalog_url()
    try:
        from ..catalog import queries as q  # heavy: sqlalchemy (catalog), not loaded by archiver --help
        from ..catalog.db import Catalog, current_revision, head_revision  # heavy: sqlalchemy (catalog), not loaded by archiver --help

        try:  # never creates one: a missing catalog is reported (and one that existed is a failure)
            cat = Catalog(url, migrate_schema=False)
        except NoCatalogError:
            return Check("catalog", "ok", f"{_mask(url)}: not created yet (the first archive, migrate or daemon "
                         "creates it)", {"url": _mask(url)})
        try:
            rev, head = current_revision(cat.engine), head_revision()
            with cat.read_session() as s:
                counts = q.state_counts(s)
        finally:
            cat.close()
    except Exception as e:  # noqa: BLE001
        return Check("catalog", "fail", f"{_mask(url)}: {e}")
    data = {"url": _mask(url), "revision": rev, "head": head, "states": counts}
    if rev != head:
        return Check("catalog", "warn", f"{_mask(url)}: schema {rev}, this archiver upgrades it to {head} on first use", data)
    failed = counts.get("failed", 0)
    files = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no files yet"
    return Check("catalog", "warn" if failed else "ok",
                 f"{_mask(url)}: {files}" + (" (see `archiver ls --status failed`)" if failed else ""), data)


def _dir_size(root: Path) -> tuple[int, int]:
    n = size = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                size += os.lstat(os.path.join(dirpath, f)).st_size
                n += 1
            except OSError:
                pass
    return n, size


def _vault(state: dict) -> Check:
    cfg = state.get("cfg")
    if cfg is None:
        return Check("vault", "fail", "no usable config")
    v = cfg.resolved_vault_dir()
    if not v.exists():
        return Check("vault", "ok", f"{v}: not created yet", {"dir": str(v), "bytes": 0})
    n, size = _dir_size(v)
    writable = os.access(v, os.W_OK | os.X_OK)
    return Check("vault", "ok" if writable else "fail",
                 f"{v}: {human_bytes(size)} in {n} file(s)" + ("" if writable else "; not writable by this user"),
                 {"dir": str(v), "bytes": size, "files": n})


def _web_cache(state: dict) -> Check:
    """The dashboard's picture cache: where, how much, against its cap. Never a failure (it is a
    cache); a warning when over the cap, not writable, or when ``web:`` itself is wrong."""
    from .web.cache import usage  # heavy: the web dashboard (app.web, ~6 ms), not loaded by archiver --help
    from .web.settings import cache_dir_of, web_settings  # heavy: the web dashboard (app.web, ~6 ms), not loaded by archiver --help

    cfg = state.get("cfg")
    if cfg is None:
        return Check("web cache", "fail", "no usable config")
    d = cache_dir_of(cfg)
    try:
        cap = web_settings(cfg).cache_max_bytes
    except UsageError as e:  # the dashboard would not start: said, and the folder still counted
        cap, problem = None, f"config {e}"
    else:
        problem = None
    n, size = usage(d) if d.exists() else (0, 0)
    data = {"dir": str(d), "bytes": size, "files": n, "max_bytes": cap}
    if problem:
        return Check("web cache", "warn", f"{d}: {human_bytes(size)} in {n} file(s); {problem}", data)
    if not d.exists():
        return Check("web cache", "ok", f"{d}: not created yet (at most {human_bytes(cap)})", data)
    detail = f"{d}: {human_bytes(size)} in {n} file(s), at most {human_bytes(cap)}"
    if size > cap:
        return Check("web cache", "warn", detail + "; over web.cache_max_bytes: trimmed at the dashboard's next "
                     "cache write (or delete the folder: it is only a cache)", data)
    if not os.access(d, os.W_OK | os.X_OK):
        return Check("web cache", "warn", detail + "; not writable by this user: pictures are served uncached", data)
    return Check("web cache", "ok", detail, data)


def _space(state: dict) -> Check:
    from ..storage.space import free_bytes, low_space  # heavy: archiver.storage.space, not loaded by archiver --help

    cfg = state.get("cfg")
    if cfg is None:
        return Check("free space", "fail", "no usable config")
    paths = [cfg.state_dir, cfg.resolved_vault_dir(), *cfg.roots, *cfg.poll_roots]
    problems = low_space(paths, min_free=getattr(cfg, "min_free_bytes", None))
    where = {str(p): human_bytes(free_bytes(p)[0]) for p in paths}
    detail = "; ".join(problems) if problems else ", ".join(f"{p}: {f} free" for p, f in where.items())
    return Check("free space", "fail" if problems else "ok", detail, {"free": where})


def _roots(state: dict) -> Check:
    cfg = state.get("cfg")
    if cfg is None or not (cfg.roots or cfg.poll_roots):
        return Check("roots", "ok", "no roots configured (the daemon needs `roots:`; migrate takes paths)")
    bad = []
    for r in [*cfg.roots, *cfg.poll_roots]:
        if not os.path.isdir(r):
            bad.append(f"{r}: missing or not mounted")
        elif not os.access(r, os.R_OK | os.W_OK | os.X_OK):
            bad.append(f"{r}: not readable and writable by this user")
    return Check("roots", "fail" if bad else "ok", "; ".join(bad) or ", ".join([*cfg.roots, *cfg.poll_roots]))


def _policy(state: dict) -> Check:
    cfg = state.get("cfg")
    try:
        from ..policy import load_policy  # heavy: yaml (policy), not loaded by archiver --help

        p = load_policy(cfg.policy if cfg else None)
    except Exception as e:  # noqa: BLE001
        return Check("policy", "fail", str(e))
    return Check("policy", "ok", f"'{p.name}' ({p.source}), {len(p.rules)} rules")


def _codecs(state: dict) -> Check:
    """Every registered codec this installation can run; one that cannot is skipped by the chain
    (the next codec in the rule's list is tried), so it is a warning, not a failure."""
    missing = {n: why for n in codecs.names() if (why := codecs.codec_class(n).unavailable())}
    ok = [n for n in codecs.names() if n not in missing]
    detail = ", ".join(ok) + "".join(f"; {n} unavailable: {why}" for n, why in missing.items())
    return Check("codecs", "warn" if missing else "ok", detail, {"available": ok, "unavailable": missing})


def _model(state: dict) -> Check:
    cfg = state.get("cfg")
    if cfg is None:
        return Check("model", "fail", "no usable config")
    name = cfg.backbone
    try:
        from ..codecs.diffusion.backbones.lookup import configured_backbone  # heavy: torch (codecs.diffusion), not loaded by archiver --help

        # with the config's adapter: a missing or mismatched one would make every diffusion
        # file fall back to another codec
        b = configured_backbone(cfg, device="cpu")
    except Exception as e:  # noqa: BLE001
        return Check("model", "fail", f"backbone {name}: {e}")
    adapter = getattr(b, "adapter_digest", None)
    return Check("model", "ok", f"backbone {b.id}, weights sha256 {b.weights_digest[:16]}..."
                 + (f", adapter sha256 {adapter[:16]}..." if adapter else ""),
                 {"backbone": b.id, "weights_sha256": b.weights_digest, "adapter_sha256": adapter})


def _detectors(state: dict) -> Check:
    missing = [m for m in ("cv2", "rapidocr_onnxruntime", "onnxruntime", "mediapipe", "ai_edge_litert")
               if importlib.util.find_spec(m) is None]
    if missing:
        return Check("detectors", "fail", f"missing packages: {', '.join(missing)} (faces/text would be assumed present)")
    return Check("detectors", "ok", "faces: BlazeFace + Haar; text: PP-OCRv4 (all shipped in their packages)")


def _gpu(state: dict) -> Check:
    cfg = state.get("cfg")
    try:
        from ..codecs.diffusion.devices import cuda_device_name  # heavy: torch (codecs.diffusion), not loaded by archiver --help

        name = cuda_device_name()
        if name is not None:
            return Check("gpu", "ok", f"{name} (device setting: {cfg.device if cfg else 'auto'})", {"cuda": True})
    except Exception as e:  # noqa: BLE001
        return Check("gpu", "warn", f"torch: {e}")
    want = cfg.device if cfg else "auto"
    return Check("gpu", "fail" if want.startswith("cuda") else "ok",
                 f"none: encoding runs on the CPU (device setting: {want})", {"cuda": False})


def _writers(state: dict) -> Check:
    from ..service.settle import CAP_SYS_PTRACE, has_capability, writer_visibility  # heavy: sqlalchemy (service), not loaded by archiver --help

    n = writer_visibility()
    if n and has_capability(CAP_SYS_PTRACE):
        return Check("open-writer check", "ok", f"sees every user's open files (CAP_SYS_PTRACE); {n} process(es) in "
                     "other user namespaces (sandboxes) excepted", {"hidden_processes": n})
    if n:
        return Check("open-writer check", "warn",
                     f"cannot see the open files of {n} process(es) of other users: grant CAP_SYS_PTRACE "
                     "(docs/operations.md, systemd) or rely on the settle window", {"hidden_processes": n})
    return Check("open-writer check", "ok", "sees every process's open files", {"hidden_processes": 0})


CHECKS: list[Callable[[dict], Check]] = [_config, _catalog, _vault, _web_cache, _space, _roots, _policy, _codecs, _model,
                                         _detectors, _gpu, _writers]


def run_checks(core: Core) -> list[Check]:
    """Every check, in order, each given what the earlier ones found (``core``: the command's
    config, opened by the first check)."""
    state: dict = {"core": core}
    out = []
    for c in CHECKS:
        try:
            out.append(c(state))
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            out.append(Check(c.__name__.strip("_"), "fail", f"check crashed: {type(e).__name__}: {e}"))
    return out


@click.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
@with_core
def doctor(ctx, as_json, core):
    """Show the config file, catalog, vault, web cache, free space, model and GPU in use, and what is wrong."""
    checks = run_checks(core)
    problems = [c for c in checks if c.status != "ok"]

    def human(_):
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
        lines = [f"{mark[c.status]} {c.name:<18} {c.detail}" for c in checks]
        lines.append("no problems found" if not problems else
                     f"{len(problems)} problem(s): " + ", ".join(c.name for c in problems))
        return "\n".join(lines)

    emit({"checks": [asdict(c) for c in checks], "ok": not any(c.status == "fail" for c in checks)}, as_json, human)
    if any(c.status == "fail" for c in checks):
        ctx.exit(1)
