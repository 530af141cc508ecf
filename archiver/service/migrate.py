"""``archiver migrate``: policy-driven bulk migration of existing collections.

Checkpoints are the catalog and its queue: every file to do is first put in the queue, each one
is marked done only after ``archive_file`` committed it, so an interrupted migration (Ctrl-C,
SIGTERM, kill -9, power cut) is resumed by running the same command again — finished files are
recognised from the catalog and not redone.

The dry run touches nothing (no file, no catalog write): it runs the real steps on every file
with writers that do nothing (``work.writers.DryWriters``): classify, encode with each codec the
rule allows, decode and check against the floor, fall back as the real run would. Its figures
are therefore predictions of the real run (same codec, same bytes), not estimates; it costs
about what the real run costs, minus the writes.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..catalog.db import Catalog, open_existing
from ..catalog.queries import reason_kind
from ..catalog.queue import FAILED, PENDING, WorkQueue, node_name, worker_id
from ..config import Config
from ..errors import NoSpaceError, UsageError
from ..storage.space import low_space
from ..work import archive_file
from .driver import Driver, resume
from .messages import Outcome, PlaceMarks, TaskSettings
from .batched import batched_device_work
from .places import Places, is_shared, require_shared_vault
from . import untaken
from .scan import handled_map, is_handled, norm_root
from .watcher import walk
from .workers import get_context, make_executor

log = logging.getLogger("archiver.service.migrate")

#: what the dry run's figures are, in its report
PREDICTION = ("predicted per file: the same steps as the real run (classify, encode with each codec "
              "the rule allows, decode and check against the floor), with nothing written")


# -- pure task functions (picklable; run in processes or on Ray) -------------------------------
def predict_task(path: str, settings: TaskSettings) -> Outcome:
    """What the real run would do with ``path``: the very steps, with writers that change
    nothing (``work.writers.DryWriters``), so codec, size and reasons are the real run's."""
    t0 = time.perf_counter()
    try:
        ctx = get_context(settings, dry=True)
        o = archive_file(path, ctx).to_dict()
        if o["action"] == "skip":
            out = {"path": path, "status": "unreadable", "error": o.get("error"), "bytes_before": _size(path)}
        else:
            out = {"path": path, "status": "planned", "rule": o["rule"], "action": o["action"],
                   "bytes_before": o["size_before"], "bytes_after": o["size_after"], "reasons": o["reasons"],
                   "attempts": o.get("attempts") or [], "original": o.get("disposition"),
                   "retention_days": o.get("retention_days"), "psnr": o.get("psnr"), "ms_ssim": o.get("ms_ssim"),
                   "score": o.get("score"), "target": o.get("target"), "shares": o.get("shares"),
                   "content_key": o.get("content_key")}
    except Exception as e:  # unreadable files are reported, never fatal
        out = {"path": path, "status": "unreadable", "error": str(e), "kind": type(e).__name__,
               "bytes_before": _size(path)}
    out["seconds"] = round(time.perf_counter() - t0, 4)
    return Outcome.of(out)


predict_task.encodes = True  # type: ignore[attr-defined]  (Ray gives it a GPU like run_task)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


# -- the driver ----------------------------------------------------------------------------------
@dataclass
class Stopper:
    """First SIGINT/SIGTERM: stop taking work, finish the files in hand. Second: abandon them.
    ``on_signal(count)``: the caller's word to the user on each signal (app/ prints it)."""

    count: int = 0
    event: threading.Event = field(default_factory=threading.Event)
    on_signal: Callable[[int], None] | None = None

    def __call__(self, signum=None, frame=None) -> None:
        self.count += 1
        self.event.set()
        if signum is not None and self.on_signal is not None:
            self.on_signal(self.count)

    def install(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        old = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in old.items()]


def _own_dirs(cfg: Config) -> tuple[str, ...]:
    """archiver's state and vault are never inputs, even when they sit under a root."""
    return (str(cfg.state_dir), str(cfg.resolved_vault_dir()))


def _check_roots(roots) -> list[str]:
    out = []
    for r in roots:
        p = norm_root(r)
        if not os.path.isdir(p):
            raise UsageError(f"{r}: not a directory")
        out.append(p)
    return out


def _bounded_map(executor, fn, args_iter, width: int, stop: Stopper | None = None) -> Iterator[Outcome]:
    """Run ``fn(*args)`` with at most ``width`` in flight; yield results as they finish."""
    pending: set[Future] = set()
    it = iter(args_iter)
    exhausted = False
    while True:
        while not exhausted and len(pending) < width and not (stop and stop.event.is_set()):
            try:
                args = next(it)
            except StopIteration:
                exhausted = True
                break
            pending.add(executor.submit(fn, *args))
        if not pending:
            return
        done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        for f in done:
            yield f.result()


def _untracked(iterable, **_):
    return iterable


def dry_run(roots, cfg: Config, *, workers: int, executor: str = "process", progress=None,
            on_signal: Callable[[int], None] | None = None, batch: int = 0) -> dict:
    """Predict every file's codec and size through the real steps, writing nothing.
    ``progress(iterable, total=, desc=)``: the caller's view of the work (app/ draws it);
    ``on_signal(count)``: told of each SIGINT/SIGTERM (1: stopping, 2: abandoning). ``batch``:
    run the files in this process and batch their diffusion device work across up to that many
    files (``service.batched``; 0: as ``executor`` says, one file per task)."""
    if batch:
        with batched_device_work(cfg, batch, workers) as device:
            report = dry_run(roots, cfg, workers=workers, executor="batched", progress=progress, on_signal=on_signal)
        report["batching"] = device.report()
        return report
    progress = progress or _untracked
    roots = _check_roots(roots)
    t0 = time.time()
    settings = TaskSettings.of(cfg)
    catalog = open_existing(cfg.resolved_catalog_url())
    files: list[str] = []
    passed: list[tuple[str, str]] = []
    already = 0
    for root in roots:
        known = handled_map(catalog, root) if catalog is not None else {}
        for p in walk(root, exclude=_own_dirs(cfg), not_taken=passed):
            try:
                st = os.stat(p)
            except OSError:
                continue
            if not is_handled(known.get(p), st, retry_failed=True):
                files.append(p)
        mine = set(files)
        already += sum(1 for p, rec in known.items() if rec[2] in _DONE and p not in mine)
    if catalog is not None:
        catalog.close()
    ex = make_executor(executor, workers)
    stop = Stopper(on_signal=on_signal)
    restore = stop.install()
    try:
        tasks = _bounded_map(ex, predict_task, ((p, settings) for p in files), 2 * max(1, workers), stop)
        planned = [o.as_dict() for o in progress(tasks, total=len(files), desc="predicting")]
    finally:
        restore()
        ex.shutdown(wait=True, cancel_futures=True)
    share_copies(planned, files)
    return _plan_report(roots, cfg, planned, already, time.time() - t0, interrupted=stop.event.is_set(),
                        not_planned=len(files) - len(planned), passed=passed)


def share_copies(planned: list[dict], order: list[str]) -> None:
    """Exact copies among the planned files (same ``content_key``: content, rule, codec settings)
    share the stored file of the first one in walk ``order``, as the real run will: they cost no
    artifact bytes."""
    first: dict[str, str] = {}
    rank = {p: i for i, p in enumerate(order)}
    for r in sorted(planned, key=lambda r: rank.get(r["path"], len(rank))):
        key = r.get("content_key")
        if r.get("status") != "planned" or not key or r.get("action") in (None, "keep") or r.get("shares"):
            continue
        if key not in first:
            first[key] = r["path"]
            continue
        r["shares"], r["bytes_after"] = first[key], 0
        r["reasons"] = list(r.get("reasons") or []) + [f"an exact copy of {first[key]}: shares its stored file"]


def _plan_report(roots, cfg, planned, already, seconds, *, interrupted, not_planned, passed=()) -> dict:
    """Per rule and codec, and per file: which codec each file would get, why, and its size."""
    rules: dict[tuple, dict] = {}
    unreadable, files = [], []
    for r in planned:
        if r["status"] != "planned":
            unreadable.append({"path": r["path"], "error": r.get("error")})
            continue
        why = (r.get("reasons") or [""])[-1]  # the codec choice's own sentence comes last
        files.append({"path": r["path"], "rule": r["rule"], "codec": r["action"], "bytes_before": r["bytes_before"],
                      "bytes_after": r["bytes_after"], "why": why, "attempts": r.get("attempts") or [],
                      "shares": r.get("shares")})
        k = (r["rule"], r["action"])
        e = rules.setdefault(k, {"rule": r["rule"], "action": r["action"], "files": 0, "bytes_before": 0,
                                 "bytes_after_predicted": 0, "examples": []})
        e["files"] += 1
        if len(e["examples"]) < 3:
            e["examples"].append({"path": r["path"], "why": why})
        e["bytes_before"] += r["bytes_before"]
        e["bytes_after_predicted"] += r["bytes_after"]
    rows = list(rules.values())
    for e in rows:
        e["savings_predicted"] = e["bytes_before"] - e["bytes_after_predicted"]
    rows.sort(key=lambda e: -e["savings_predicted"])
    before = sum(e["bytes_before"] for e in rows)
    after = sum(e["bytes_after_predicted"] for e in rows)
    return {
        "vault": _vault_share(planned),
        "dry_run": True, "roots": roots, "policy": cfg.policy or "default", "files": len(files),
        "already_archived": already, "unreadable": unreadable, "not_planned": not_planned,
        "interrupted": interrupted, "bytes_before": before, "bytes_after_predicted": after,
        "savings_predicted": before - after, "savings_ratio": (1 - after / before) if before else 0.0,
        "rules": rows, "codecs": _codec_shares(planned), "predictions": files, "seconds": round(seconds, 2),
        "method": PREDICTION, "not_taken": untaken.group([*passed, *untaken.of_outcomes(planned)]),
        "batching": None,
    }


def _vault_share(planned) -> dict:
    """What the vault will hold on top of the prediction (originals kept for their retention
    period, then deleted by the daemon or `verify --expire-vault`), and from when it frees."""
    by_days: dict[int, int] = defaultdict(int)
    for r in planned:
        if r.get("status") == "planned" and r.get("original") == "vault" and r.get("action") != "keep":
            by_days[int(r.get("retention_days") or 0)] += int(r["bytes_before"])
    today = dt.date.today()
    frees = [{"bytes": b, "retention_days": d, "frees_on": (today + dt.timedelta(days=d)).isoformat()}
             for d, b in sorted(by_days.items())]
    return {"bytes": sum(by_days.values()), "frees": frees}


def _codec_shares(planned: list[dict]) -> dict[str, dict]:
    """Files and bytes per codec the files would get (``keep``: left as they are)."""
    out: dict[str, dict] = {}
    ok = [r for r in planned if r["status"] == "planned"]
    for r in ok:
        e = out.setdefault(r["action"], {"files": 0, "bytes_before": 0, "bytes_after": 0})
        e["files"] += 1
        e["bytes_before"] += r["bytes_before"]
        e["bytes_after"] += r["bytes_after"]
    for e in out.values():
        e["share"] = round(e["files"] / len(ok), 4)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["files"]))


def run(roots, cfg: Config, *, workers: int, executor: str = "process", progress=None,
        on_signal: Callable[[int], None] | None = None, stopper: Stopper | None = None,
        max_attempts: int = 2, batch: int = 0) -> dict:
    """The real migration. Resumable: rerun with the same roots after any interruption. The
    catalog's disk running full stops it (``NoSpaceError``, exit 13) after the files in hand.
    ``progress``, ``on_signal`` and ``batch`` as in ``dry_run``."""
    if batch:
        with batched_device_work(cfg, batch, workers) as device:
            report = run(roots, cfg, workers=workers, executor="batched", progress=progress, on_signal=on_signal,
                         stopper=stopper, max_attempts=max_attempts)
        report["batching"] = device.report()
        return report
    progress = progress or _untracked

    roots = _check_roots(roots)
    require_shared_vault(cfg)
    t0 = time.time()
    catalog = Catalog(cfg.resolved_catalog_url(), create=True)  # where none ever was; never over a lost one
    try:
        places = _shared_places(catalog, cfg, roots)
    except BaseException:
        catalog.close()
        raise
    queue = WorkQueue.for_catalog(catalog, max_attempts=max_attempts, backoff_seconds=0.0,
                                  lease_seconds=float(cfg.lease_seconds), node=cfg.node_name)
    stop = stopper or Stopper(on_signal=on_signal)
    restore = stop.install()
    stale = resume(cfg, catalog, queue)
    already = 0
    todo: list[tuple[str, str]] = []
    passed: list[tuple[str, str]] = []
    for root in roots:
        known = handled_map(catalog, root)
        for p in walk(root, exclude=_own_dirs(cfg), not_taken=passed):
            try:
                st = os.stat(p)
            except OSError:
                continue
            if not is_handled(known.get(p), st, retry_failed=True):
                todo.append((p, root))
        # handled by earlier runs: every path under the root whose newest version is done, also
        # those replaced by their compressed output (the walk no longer finds them), but not
        # those this run does (again): the new ones and the claims an interrupted run left
        busy = {p for p, _ in todo} | queue.waiting_under(root)
        already += sum(1 for p, rec in known.items() if rec[2] in _DONE and p not in busy)
    try:
        _check_space(cfg, roots, todo, workers)
    except Exception:
        restore()
        catalog.close()
        raise
    queue.enqueue_many(todo)
    total = queue.depth(roots)["pending"]
    driver = Driver(queue, worker_id("migrate", cfg.node_name), TaskSettings.of(cfg, places),
                    workers=workers, executor=executor, lease_seconds=cfg.lease_seconds, logger=log)
    outcomes: list[dict] = []
    aborted = False
    # a worker found the catalog's disk full: no new work, the files in hand finish, then exit 13 (a
    # write of this driver's own that fails so raises at once: the pool is stopped as on Ctrl-C twice)
    no_space: list[str] = []

    def out_of_space(why: str) -> None:
        if not no_space:
            no_space.append(why)
            log.info("catalog full: stopping after the files in hand", extra={"error": why})  # (-v; the error line says it)
        stop.event.set()

    def results() -> Iterator[dict]:
        nonlocal aborted
        while True:
            driver.upkeep()  # heartbeat for our claims; claims of a dead daemon or driver elsewhere
            if not stop.event.is_set():
                driver.fill(roots=roots)
            if not driver.in_flight:
                return
            if stop.count >= 2:
                aborted = True
                return
            driver.wait(0.5)
            for done in driver.collect(restart=not stop.event.is_set()):
                out = done.outcome.as_dict()
                if out.get("no_space"):  # not this file's fault: it is done by the rerun, no attempt counted
                    out_of_space(str(out.get("error")))
                    continue
                if done.state == PENDING:
                    continue  # it comes round again
                if done.state == FAILED:
                    out["status"] = out.get("status") or "failed"
                yield out

    try:
        for out in progress(results(), total=total, desc="archiving"):
            outcomes.append(out)
    finally:
        restore()
        if aborted or driver.in_flight:
            driver.abandon()
        else:
            driver.close()
        left = queue.depth(roots)
        catalog.close()
    if no_space:
        raise NoSpaceError(no_space[0])
    return _run_report(roots, cfg, outcomes, already=already, stale=stale, left=left,
                       seconds=time.time() - t0, interrupted=stop.event.is_set(), passed=passed)


def _shared_places(catalog, cfg: Config, roots: list[str]) -> PlaceMarks | None:
    """With a shared catalog: this node's view of the roots and vault, checked against the
    catalog (refused outright when it differs), and the ids every task checks again where it runs."""
    if not is_shared(cfg.resolved_catalog_url()):
        return None
    places = Places(catalog, node_name(cfg.node_name))
    vault, marks = None, {}
    Path(cfg.resolved_vault_dir()).mkdir(parents=True, exist_ok=True)
    for kind, path in [("vault", str(cfg.resolved_vault_dir()))] + [("root", r) for r in roots]:
        mark, problem = places.register(path, kind)
        if problem:
            raise UsageError(problem)
        if kind == "vault":
            vault = mark
        elif mark is not None:
            marks[path] = mark
    return PlaceMarks(marks, vault)


_DONE = ("committed", "skipped")


def _check_space(cfg: Config, roots, todo, workers: int) -> None:
    """Refuse to start when a filesystem we write to lacks the reserve plus room for the files
    in hand (each worker may hold a compressed output beside its original, and a vault copy)."""
    largest = 0
    for p, _ in todo:
        try:
            largest = max(largest, os.stat(p).st_size)
        except OSError:
            pass
    problems = low_space([cfg.state_dir, cfg.resolved_vault_dir(), *roots], 2 * largest * max(1, workers),
                         min_free=cfg.min_free_bytes)
    if problems:
        raise NoSpaceError("not enough free disk space to start the migration: " + "; ".join(problems))


def _run_report(roots, cfg, outcomes, *, already, stale, left, seconds, interrupted, passed=()) -> dict:
    by_status: dict[str, int] = defaultdict(int)
    rules: dict[tuple, dict] = {}
    failures = []
    before = after = 0
    for o in outcomes:
        st = str(o.get("status"))
        by_status[st] += 1
        if o.get("error") and (o.get("retry") or st in ("failed", "error")):
            failures.append({"path": o.get("path"), "status": st, "error": o.get("error")})
        b = int(o.get("bytes_before") or 0)
        a = o.get("bytes_after")
        a = b if a is None else int(a)
        before += b
        after += a
        k = (o.get("rule") or f"({st})", o.get("action") or "keep")
        e = rules.setdefault(k, {"rule": k[0], "action": k[1], "files": 0, "bytes_before": 0, "bytes_after": 0})
        e["files"] += 1
        e["bytes_before"] += b
        e["bytes_after"] += a
    rows = sorted(rules.values(), key=lambda e: -(e["bytes_before"] - e["bytes_after"]))
    for e in rows:
        e["saved"] = e["bytes_before"] - e["bytes_after"]
    # every file with its reason: the rule's first reason, the fallback's reason when the codec
    # fell back, the error when it was skipped or failed
    detail = [{"path": o.get("path"), "status": o.get("status"), "rule": o.get("rule"), "action": o.get("action"),
               "reason": (o.get("reasons") or [None])[0], "fallback": o.get("fallback"), "error": o.get("error"),
               "bytes_before": o.get("bytes_before"), "bytes_after": o.get("bytes_after")} for o in outcomes]
    fallbacks: dict[str, list[str]] = defaultdict(list)
    for d in detail:
        if d["fallback"]:
            fallbacks[reason_kind(d["fallback"])].append(d["path"])
    return {
        "outcomes": detail,
        "fallbacks": [{"reason": k, "files": len(v), "examples": v[:3]} for k, v in
                      sorted(fallbacks.items(), key=lambda kv: -len(kv[1]))],
        "skipped": [{"path": d["path"], "error": d["error"]} for d in detail if d["status"] == "skipped"],
        "dry_run": False, "roots": roots, "policy": cfg.policy or "default", "interrupted": interrupted,
        "files": len(outcomes), "by_outcome": dict(by_status), "already_archived": already,
        "requeued_after_crash": stale, "bytes_before": before, "bytes_after": after, "saved": before - after,
        "rules": rows, "failures": failures, "queue_left": left, "seconds": round(seconds, 2),
        "codecs": _codec_shares([{"status": "planned", "action": o.get("action") or "keep",
                                  "bytes_before": int(o.get("bytes_before") or 0),
                                  "bytes_after": int(o["bytes_after"] if o.get("bytes_after") is not None
                                                     else o.get("bytes_before") or 0)}
                                 for o in outcomes if o.get("status") in ("committed", "unchanged")]),
        "images_per_min": round(len(outcomes) / seconds * 60, 2) if seconds > 0 else None,
        "not_taken": untaken.group([*passed, *untaken.of_outcomes(outcomes)]),
        "batching": None,
    }
