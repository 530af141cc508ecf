"""The worker side: one pure task function and the pools that run it.

``run_task(path, settings, root) -> Outcome`` is the whole unit of work as a *pure function of its
arguments*: a path and a ``messages.TaskSettings`` (frozen, picklable) in, a ``messages.Outcome``
out. It is what the driver's pools (the daemon, ``archiver migrate``) and a Ray task all
run; the catalog (named by ``settings.config.catalog_url``) is where its side effects are
recorded, so any machine that can reach the files and the catalog can run it.

Workers are separate processes (the encode is CPU-bound torch work, the GIL would serialise
threads), started with ``spawn`` (never fork a process that has watcher threads), each with
``torch.set_num_threads(cores // workers)`` so N workers do not oversubscribe the CPU. They
ignore SIGINT/SIGTERM — the parent decides when to stop, so a file in hand is finished rather
than cut half-way — and die with the parent (PR_SET_PDEATHSIG) so a kill -9'd daemon cannot
leave an orphan still working on a file the restarted daemon hands out again.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from ..catalog.db import open_catalog, open_existing
from ..codecs.diffusion.batching import active_batcher
from ..catalog.locks import catalog_path_lock
from ..errors import ArchiverError, NoSpaceError, UsageError
from ..work import archive_file
from ..work.context import ArchiveContext
from .messages import Outcome, TaskSettings
from .places import check_view

_CONTEXTS: dict[str, Any] = {}
_CONTEXTS_LOCK = threading.Lock()  # worker threads (the thread and batched pools) build it once


def get_context(settings: TaskSettings, *, dry: bool = False):
    """The archive context for ``settings``, built once per process (models load once). ``dry``:
    the dry run's, whose catalog is only read (the real one if it exists, else an empty one in
    memory): a dry run must not create or migrate the catalog."""
    key = settings.context_key() + (":dry" if dry else "")
    with _CONTEXTS_LOCK:
        return _CONTEXTS.get(key) or _build_context(key, settings, dry)


def _build_context(key: str, settings: TaskSettings, dry: bool):
    cfg = settings.config
    if dry:
        catalog = open_existing(cfg.resolved_catalog_url()) or open_catalog("sqlite://", create=True)
        ctx = ArchiveContext.from_config(cfg, catalog=catalog, dry_run=True)
    else:
        ctx = ArchiveContext.from_config(cfg)
    for old in _CONTEXTS.values():  # a reloaded config replaces the old models, not piles up
        try:
            old.catalog.close()
        except Exception:
            pass
    _CONTEXTS.clear()
    _CONTEXTS[key] = ctx
    return ctx


def outcome_dict(outcome: Any, path: str) -> dict:
    """Normalise an ``ArchiveOutcome`` to the JSON-able record of an ``Outcome``:
    path, status (committed|skipped|failed|unchanged), action, rule, bytes_before, bytes_after,
    error, retry (a ``failed`` outcome may be transient: disk full, catalog busy)."""
    if hasattr(outcome, "to_dict"):
        d = outcome.to_dict()
    elif dataclasses.is_dataclass(outcome):
        d = dataclasses.asdict(outcome)
    else:
        d = dict(outcome)
    d = json.loads(json.dumps(d, default=str))
    d.setdefault("path", path)
    d["status"] = d.get("state") or d.get("status") or "unknown"
    d["bytes_before"] = d.get("size_before")
    d["bytes_after"] = d.get("size_after")
    d["retry"] = d["status"] == "failed"
    return d


def run_task(path: str, settings: TaskSettings, root: str | None = None) -> Outcome:
    """Archive one file; never raises (errors come back as an outcome with ``retry``; with
    ``no_space`` too when the catalog's disk is full: the caller stops taking work)."""
    t0 = time.perf_counter()
    places = settings.places
    if places is not None:  # a shared catalog: does this node see the shared root and vault?
        problem = (check_view(root, places.root(root), "root")
                   or check_view(settings.config.vault_dir, places.vault, "vault"))
        if problem:
            return Outcome(path, "refused", retry=True, error=problem, seconds=round(time.perf_counter() - t0, 4),
                           worker_pid=os.getpid())
    try:
        ctx = copy.copy(get_context(settings))  # its own root: threads share the context's models
        ctx.root = root
        with catalog_path_lock(ctx.catalog.engine, path) as mine:
            if mine:
                out = outcome_dict(archive_file(path, ctx), path)
            else:
                out = {"path": path, "status": "busy", "retry": True,
                       "error": "another node is working on this file; retried later"}
    except ArchiverError as e:  # e.g. a bad policy or missing weights: retrying later may help after a fix
        out = {"path": path, "status": "failed", "error": str(e), "kind": type(e).__name__, "retry": True}
        if isinstance(e, NoSpaceError):  # the catalog's disk is full: the run must stop, not go on failing
            out["no_space"] = True
    except Exception as e:  # a bug or a transient problem (disk full, catalog busy): retry later
        out = {"path": path, "status": "error", "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc(limit=8), "retry": True}
    out["seconds"] = round(time.perf_counter() - t0, 4)
    out["worker_pid"] = os.getpid()
    return Outcome.of(out)


run_task.encodes = True  # type: ignore[attr-defined]  (Ray gives it a GPU when there are some)


# -- pools --------------------------------------------------------------------------------------
def torch_threads_for(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the lock + stale-claim lease still protect
        return


def init_worker(torch_threads: int, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    # torch reads these when it is first imported (lazily, only by a diffusion encode), so a
    # lossless-only worker never pays for importing torch
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(torch_threads)
    os.environ["ARCHIVER_TORCH_THREADS"] = str(torch_threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation chatter in logs
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(torch_threads)


class BatchedThreadPool(ThreadPoolExecutor):
    """Worker threads whose files' diffusion device work goes through this process's active
    ``Batcher`` (``codecs.diffusion.batching``): each task runs as one of its clients, so that
    the batcher knows when every file in hand waits on it and runs the batch at once."""

    def __init__(self, workers: int):
        super().__init__(max_workers=workers, thread_name_prefix="archiver-batched")

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return super().submit(_as_batch_client, fn, *args, **kwargs)


def _as_batch_client(fn, *args, **kwargs):
    batcher = active_batcher()
    if batcher is None:  # the run's batcher is gone (it ended or was interrupted): the file runs alone
        return fn(*args, **kwargs)
    with batcher.client():
        return fn(*args, **kwargs)


def make_executor(kind: str, workers: int) -> Executor:
    """``process`` (default), ``thread`` (light policies, tests), ``batched`` (threads in this
    process whose diffusion device work the active ``Batcher`` batches; ``migrate --batch``) or
    ``ray``."""
    workers = max(1, int(workers))
    if kind == "batched":
        return BatchedThreadPool(workers)
    if kind == "process":
        return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                   initializer=init_worker, initargs=(torch_threads_for(workers), os.getpid()))
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="archiver-worker")
    if kind == "ray":
        return RayExecutor(workers)
    raise UsageError(f"unknown executor {kind!r} (process, thread, batched, ray)")


def _ray_messages_to_stderr() -> None:
    """Ray's driver prints cluster messages ("(raylet) A worker died ...") on stdout from a
    thread, whatever ``log_to_driver`` says; stdout is archiver's report (``--json``), so they go
    to stderr instead."""
    try:
        import ray._private.worker as rw  # heavy: ray, optional extra

        orig = rw.print_to_stdstream
    except (ImportError, AttributeError):  # another Ray layout: leave it alone
        return
    if getattr(orig, "_archiver", False):
        return

    def to_stderr(data, *args, **kwargs):
        return orig(dict(data, is_err=True), *args, **kwargs)

    to_stderr._archiver = True
    rw.print_to_stdstream = to_stderr


class RayExecutor(Executor):
    """Runs ``run_task`` as Ray tasks (``RAY_ADDRESS`` picks the cluster; local Ray otherwise).

    Each task is ``ray.remote(run_task).remote(path, config)``; its ObjectRef becomes a normal
    ``concurrent.futures.Future``, so migrate's loop does not care where the work runs. Workers
    on the cluster need the package installed, the files at the same paths (shared storage) and
    the catalog on a server (PostgreSQL) — SQLite cannot be shared between machines.
    """

    def __init__(self, workers: int):
        try:
            import ray  # heavy: ray, optional extra
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'archiver[ray]' (or pip install ray)") from None
        self._ray = ray
        _ray_messages_to_stderr()
        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, log_to_driver=False)
        self._gpus = float(os.environ.get("ARCHIVER_RAY_GPUS", "0"))
        self._remotes: dict = {}

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """``fn`` is a module-level task function (run_task, or migrate's predict_task)."""
        remote = self._remotes.get(fn)
        if remote is None:
            gpus = self._gpus if getattr(fn, "encodes", False) else 0  # only encoding tasks want a GPU
            remote = self._remotes[fn] = self._ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(fn)
        return remote.remote(*args, **kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None
