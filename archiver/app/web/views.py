"""What each page shows, as plain data: the HTML pages render it, the JSON API returns it, so
the two never disagree. All SQL lives in ``archiver.catalog.queries``."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import threading
import time
from pathlib import Path

from ...catalog import queries as q
from ...codecs import codec_class
from ...catalog.locks import server_locks_held
from ...catalog.models import MAX_ID
from ...errors import UsageError
from ...service.lock import lock_holder, lock_path_for
from ...storage.safeopen import open_regular_below, read_regular_below

#: top folders shown on the overview (the rest are summed into one line)
TOP_FOLDERS = 15


def daemon_status(cfg, catalog) -> dict:
    """Is a daemon serving this catalog (who holds its lock), read without taking the lock."""
    url = catalog.url
    pid = lock_holder(lock_path_for(url, cfg.state_dir))
    if pid is not None:
        return {"running": True, "pid": pid, "where": "this host"}
    try:
        held = server_locks_held(catalog.engine)
    except Exception:  # a status panel never breaks the page
        held = None
    return {"running": bool(held), "pid": None, "where": f"{held} node(s) of a shared catalog" if held else None}


def _fold(groups: list[dict], n: int) -> list[dict]:
    if len(groups) <= n:
        return groups
    rest = groups[n:]
    other = {"key": f"({len(rest)} more)", "files": sum(g["files"] for g in rest),
             "bytes_before": sum(g["bytes_before"] for g in rest), "bytes_after": sum(g["bytes_after"] for g in rest)}
    other["saved_bytes"] = other["bytes_before"] - other["bytes_after"]
    other["saved_fraction"] = round(other["saved_bytes"] / other["bytes_before"], 4) if other["bytes_before"] else 0.0
    return groups[:n] + [other]


class ChangeCache:
    """A value computed from the whole catalog, kept until the catalog changes (a new event) —
    and while it keeps changing, computed again at most every ``refresh_s`` seconds, so a busy
    daemon does not make every visit pay for it. One computation at a time; others share it."""

    def __init__(self, catalog, compute, refresh_s: float = 10.0):
        self.catalog, self.compute, self.refresh_s = catalog, compute, refresh_s
        self.value = None
        self._key = -1
        self._at = 0.0
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self.value = None

    def get(self, key: int):
        """(value, current): ``current`` is False while a change is not in the value yet."""
        with self._lock:
            if self.value is None or (key != self._key and time.monotonic() - self._at >= self.refresh_s):
                with self.catalog.read_session() as s:
                    self.value = self.compute(s)
                self._key, self._at = key, time.monotonic()
            return self.value, key == self._key


def _sums(s) -> dict:
    summary = q.committed_summary(s)
    sums = {**summary, "by_folder": _fold(q.savings_by_folder(s), TOP_FOLDERS), "vault": q.vault_schedule(s)}
    before = sum(g["bytes_before"] for g in summary["by_rule"])
    after = sum(g["bytes_after"] for g in summary["by_rule"])
    sums["total"] = {"files": sum(g["files"] for g in summary["by_rule"]), "bytes_before": before, "bytes_after": after,
                     "saved_bytes": before - after, "saved_fraction": round((before - after) / before, 4) if before else 0.0}
    sums["as_of"] = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    return sums


class Views:
    """What the pages show. The overview's sums over every committed row (per rule, codec, day,
    folder, the vault) and the browser's filter choices come from ``ChangeCache``s; the state
    counts, queue, daemon, failures and every page of rows are read on each request."""

    def __init__(self, cfg, catalog, refresh_s: float = 10.0):
        self.cfg, self.catalog = cfg, catalog
        self.sums = ChangeCache(catalog, _sums, refresh_s)
        self.choices = ChangeCache(catalog, lambda s: {k: q.distinct_values(s, k) for k in q.BROWSE_FILTERS}, refresh_s)

    def _key(self) -> int:
        with self.catalog.read_session() as s:
            return q.last_event_id(s)

    def overview(self, problems: int = 20) -> dict:
        with self.catalog.read_session() as s:
            key = q.last_event_id(s)
            live = {"states": q.state_counts(s), "problems": q.recent_problems(s, problems), "queue": q.queue_depth(s),
                    "last_event_at": q.last_event_at(s)}
        sums, current = self.sums.get(key)
        return {**sums, **live, "daemon": daemon_status(self.cfg, self.catalog), "sums_current": current}

    def browse(self, args, *, default_limit: int = 50, choices: bool = True) -> dict:
        d = browse(self.catalog, args, default_limit=default_limit)
        if choices:
            d["choices"] = self.choices.get(self._key())[0]
        return d


# -- the browser ---------------------------------------------------------------------------------
def _day(text: str | None, name: str, end: bool = False) -> dt.datetime | None:
    if not text:
        return None
    try:
        d = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{name}: not a date (YYYY-MM-DD): {text!r}") from None
    return dt.datetime.combine(d + dt.timedelta(days=1) if end else d, dt.time())


def _int(text, name: str, lo: int, hi: int | None = None) -> int | None:
    if text in (None, ""):
        return None
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"{name}: not a whole number: {text!r}") from None
    if v < lo or (hi is not None and v > hi):
        raise UsageError(f"{name}: must be between {lo} and {hi}" if hi else f"{name}: must be at least {lo}")
    return v


def browse_filters(args) -> dict:
    """The browser's filters from request arguments, checked (bad ones are a UsageError)."""
    f = {k: (args.get(k) or "").strip() or None for k in ("path", *q.BROWSE_FILTERS)}
    for k, v in f.items():
        if v is not None and len(v) > 4096:
            raise UsageError(f"{k}: too long")
    f["since"] = _day(args.get("since"), "since")
    f["until"] = _day(args.get("until"), "until", end=True)
    return f


#: how the browser shows a page: a table, or a grid of thumbnails
VIEWS = ("list", "grid")
#: a grid page holds this many cards unless ``limit`` says otherwise (divides by 2, 3, 4, 6 and 8)
GRID_PAGE = 48


def browse(catalog, args, *, default_limit: int = 50) -> dict:
    """One page of the browser (filters checked; a bad one is a UsageError); ``view=grid`` is the
    same page of rows (same filters, same keyset paging) shown as thumbnails."""
    filters = browse_filters(args)
    view = (args.get("view") or "list").strip()
    if view not in VIEWS:
        raise UsageError(f"view: one of {', '.join(VIEWS)}, not {view[:40]!r}")
    default_limit = GRID_PAGE if view == "grid" else default_limit
    limit = _int(args.get("limit"), "limit", 1, q.MAX_PAGE) or default_limit
    before = _int(args.get("before"), "before", 1, MAX_ID)
    with catalog.read_session() as s:
        page = q.browse(s, before_id=before, limit=limit, **filters)
        count, more = q.browse_count(s, **filters)
    shown = {k: (args.get(k) or "").strip() or None for k in ("path", *q.BROWSE_FILTERS, "since", "until")}
    query = {k: v for k, v in shown.items() if v}
    if args.get("limit"):
        query["limit"] = limit
    base = dict(query)  # the same filters, in the other view
    if view != "list":
        query["view"] = view
    return {"filters": shown, "query": query, "base_query": base, "view": view, "limit": limit, "before": before, "count": count,
            "count_capped": more, **page}


def file_detail(catalog, file_id: int) -> dict | None:
    with catalog.read_session() as s:
        d = q.file_detail(s, file_id)
    if d is None:
        return None
    f = d["file"]
    cls = f.get("classification") or {}
    d["regions"] = [list(map(int, b)) for b in (cls.get("protected_regions") or []) if len(b) == 4]
    d["evidence"] = cls.get("evidence") or {}
    d["restore_gives"] = restore_gives(f)
    return d


#: what a restore of each exactness gives back, in words
EXACT_WORDS = {"bytes": "exact: the identical bytes", "pixels": "exact: the identical pixels and metadata"}


def restore_gives(f: dict) -> str:
    """What restoring this row gives back, said from its codec: "exact" for lossless, "an
    approximation (generative: ...)" only for a codec that invents detail (diffusion), "an
    approximation (conventional lossy, AVIF q60)" for AVIF, JPEG XL and the like."""
    exact = f.get("restore_exact")
    if exact in EXACT_WORDS:
        return EXACT_WORDS[exact]
    if exact != "approx":
        return "–"
    name = f.get("codec") or ""
    try:
        cls = codec_class(name)
    except UsageError:  # a codec this archiver does not have: say only what the catalog says
        return f"an approximation (codec {name or 'not recorded'})"
    if cls.generative:
        return f"an approximation (generative: {name}, detail is synthesised)"
    quality = (f.get("codec_params") or {}).get("quality")
    q_text = f" q{quality:g}" if isinstance(quality, (int, float)) else ""
    label = {"avif": "AVIF", "jxl": "JPEG XL"}.get(name, name)
    return f"an approximation (conventional lossy, {label}{q_text})"


# -- the bench page ------------------------------------------------------------------------------
# Nothing below the bench folder is read through a symbolic link: not a run folder, not a folder
# in it, not a picture, not its summary.md or results.json (storage.safeopen).
def _read_below(bench_dir: Path, *parts: str) -> bytes | None:
    try:
        return read_regular_below(bench_dir, parts)
    except OSError:
        return None


def bench_runs(bench_dir: Path | None) -> list[dict]:
    """Published ``archiver bench`` runs: real folders (not links) holding a results.json or a
    summary.md."""
    if bench_dir is None or not bench_dir.is_dir():
        return []
    runs = []
    for d in sorted(p for p in bench_dir.iterdir() if not p.is_symlink() and p.is_dir() and not p.name.startswith(".")):
        results = _read_below(bench_dir, d.name, "results.json")
        summary = _read_below(bench_dir, d.name, "summary.md")
        if results is None and summary is None:
            continue
        info = {"name": d.name, "has_summary": summary is not None}
        try:
            r = json.loads(results)
            cfg = r.get("config") or {}
            info.update(images=r.get("images_done"), bpps=cfg.get("bpps"), codecs=cfg.get("codecs"),
                        seconds=r.get("seconds"), verdicts=r.get("verdicts") or [])
        except (TypeError, ValueError, AttributeError):
            pass
        runs.append(info)
    return runs


def _pictures(d: Path) -> list[str]:
    """The .png files below ``d`` that are regular files, found without entering a linked folder."""
    out = []
    for dirpath, _, files in os.walk(d):  # followlinks=False: a linked folder is listed, never entered
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                if f.lower().endswith(".png") and stat.S_ISREG(os.lstat(p).st_mode):
                    out.append(os.path.relpath(p, d))
            except OSError:
                pass
    return sorted(out)


def bench_run(bench_dir: Path | None, name: str) -> dict | None:
    runs = {r["name"]: r for r in bench_runs(bench_dir)}
    if name not in runs:
        return None
    run = dict(runs[name])
    summary = _read_below(bench_dir, name, "summary.md") if run["has_summary"] else None
    run["summary_md"] = summary.decode("utf-8", "replace") if summary is not None else None
    run["images"] = _pictures(bench_dir / name)
    return run


def open_bench_file(bench_dir: Path, name: str, filename: str) -> int:
    """A descriptor of ``bench_dir/name/filename``: a regular file reached without a link and
    without ``..``; ``OSError`` otherwise (the page answers 404)."""
    return open_regular_below(bench_dir, [name, *filename.split("/")])
