"""The one loop of the daemon and ``archiver migrate``: claim -> submit -> renew -> take over -> collect.

A ``Driver`` owns a worker pool and the queue rows it has claimed (``in_flight``). Its caller
decides *when* each step runs (the daemon from its main loop, migrate from its results
iterator); the driver does each step the same way for both:

- ``fill``: claim as many due rows as there are idle workers and submit ``run_task`` for each
  (a pool that broke on submit is replaced, the row given back);
- ``upkeep``: renew the claims in hand (every lease/4: a heartbeat, so a live claim never looks
  stale to another node) and take over the claims of dead claimers (every lease/2);
- ``collect``: record each finished task in the queue (done; failed with backoff; given back
  untouched when the catalog's disk is full) and hand it to the caller as a ``Done``; a pool
  broken by a dead worker is replaced once nothing is in flight;
- ``abandon``: kill the pool and give every claim in hand back (a second stop signal);
- ``close``: wait for the pool to finish.

What crosses to the workers is ``run_task(path, settings, root)`` with a ``messages.TaskSettings``;
what comes back is a ``messages.Outcome``.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Iterable

from ..catalog.queue import Item, WorkQueue
from ..config import Config
from ..errors import NoSpaceError
from ..work import ArchiveContext, recover_pending
from .messages import Outcome, TaskSettings
from .workers import make_executor, run_task

log = logging.getLogger("archiver.service.driver")


@dataclass
class Done:
    """One finished task: its queue row, its outcome, and the row's queue state after it
    (``done``, ``pending`` (retried later), ``failed``, or ``released`` when the catalog's disk
    was full). ``died``: the worker died under it (the outcome says so)."""

    item: Item
    outcome: Outcome
    state: str
    died: bool = False


class Driver:
    def __init__(self, queue: WorkQueue, claimer: str, settings: TaskSettings, *, workers: int,
                 executor: str = "process", lease_seconds: float = 300.0, logger: logging.Logger = log):
        self.queue = queue
        self.me = claimer
        self.settings = settings
        self.kind = executor
        self.workers = max(1, int(workers))
        self.lease = max(0.2, float(lease_seconds))
        self.log = logger
        self.in_flight: dict[Future, Item] = {}
        self._broken = False
        self._last_renew = 0.0
        self._last_takeover = time.monotonic()
        self.executor = make_executor(executor, self.workers)

    # -- the pool ------------------------------------------------------------------------------
    def resize(self, workers: int) -> None:
        """A new pool of ``workers``; files running in the old one still finish."""
        workers = max(1, int(workers))
        if workers != self.workers:
            self.workers = workers
            old, self.executor = self.executor, make_executor(self.kind, workers)
            old.shutdown(wait=False)

    def _replace_pool(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = make_executor(self.kind, self.workers)

    # -- claim and submit ----------------------------------------------------------------------
    def fill(self, *, roots: Iterable[str] | None = None, exclude_roots: Iterable[str] = ()) -> int:
        """Claim up to one due row per idle worker and submit it; returns how many were claimed."""
        free = self.workers - len(self.in_flight)
        if free <= 0:
            return 0
        items = self.queue.claim(self.me, free, roots=roots, exclude_roots=exclude_roots)
        for item in items:
            try:
                fut = self.executor.submit(run_task, item.path, self.settings, item.root)
            except (BrokenProcessPool, RuntimeError) as e:
                self.log.error("worker pool broken; restarting it", extra={"error": str(e)})
                self.queue.release(item.id)
                self.executor = make_executor(self.kind, self.workers)
                continue
            self.in_flight[fut] = item
        return len(items)

    # -- renew and take over -------------------------------------------------------------------
    def upkeep(self, now: float | None = None) -> None:
        """Renew the claims in hand (every lease/4) and take over stale claims (every lease/2)."""
        now = time.monotonic() if now is None else now
        if self.in_flight and now - self._last_renew >= self.lease / 4:
            self._last_renew = now
            held = self.queue.renew(self.me, [i.id for i in self.in_flight.values()])
            if held < len(self.in_flight):
                self.log.warning("claims lost to another node (this one looked dead: lease_seconds too short?)",
                                 extra={"held": held, "in_flight": len(self.in_flight)})
        if now - self._last_takeover >= self.lease / 2:
            self._last_takeover = now
            n = self.queue.requeue_stale()
            if n:
                self.log.warning("took over stale claims", extra={"count": n})

    # -- collect -------------------------------------------------------------------------------
    def wait(self, timeout: float) -> None:
        """Until a task finishes or ``timeout`` passes."""
        if self.in_flight:
            wait(list(self.in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
        else:
            time.sleep(timeout)

    def collect(self, *, restart: bool = True) -> list[Done]:
        """Record every finished task in the queue. ``restart``: replace a pool that a dead worker
        broke once nothing is in flight (not while stopping)."""
        out: list[Done] = []
        for fut in [f for f in self.in_flight if f.done()]:
            item = self.in_flight.pop(fut)
            died = False
            try:
                outcome = fut.result()
            except BrokenProcessPool as e:
                outcome = Outcome(item.path, "error", retry=True,
                                  error=f"a worker process died ({e}); out of memory? (every file in hand is retried)")
                died = self._broken = True
            except Exception as e:  # run_task does not raise: the worker died (a Ray task's node, say)
                outcome = Outcome(item.path, "error", retry=True, error=f"worker died: {e}")
                died = True
            if outcome.no_space:  # not this file's fault: no attempt counted, the rerun does it
                _quietly(self.queue.release, item.id)
                state = "released"
            elif outcome.retry:
                state = self.queue.fail(item.id, str(outcome.error))
            else:
                self.queue.complete(item.id)
                state = "done"
            out.append(Done(item, outcome, state, died))
        if self._broken and restart and not self.in_flight:
            # a dead worker breaks the whole pool (every future in it fails): start a fresh one
            self._broken = False
            self._replace_pool()
            self.log.warning("worker pool restarted after a worker died", extra={})
        return out

    # -- stop ----------------------------------------------------------------------------------
    def abandon(self) -> list[Item]:
        """Kill the pool and give the claims in hand back (the next start resumes them)."""
        items = list(self.in_flight.values())
        procs = getattr(self.executor, "_processes", None) or {}
        for p in list(procs.values()):
            try:
                p.kill()
            except Exception:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)
        for item in items:
            self.queue.release(item.id)
        self.in_flight.clear()
        return items

    def close(self, wait: bool = True) -> None:
        self.executor.shutdown(wait=wait)


def resume(cfg: Config, catalog, queue: WorkQueue) -> int:
    """At start: claims of dead claimers go back to the queue (returns how many), then what an
    interrupted run left in the catalog is finished or rolled back (rows in progress, originals
    still to be removed through the invariant's gate). The latter only with a single-host
    (SQLite) catalog: with a shared catalog another node may be working on those files now."""
    stale = queue.requeue_stale()
    recover(cfg, catalog)
    return stale


def recover(cfg: Config, catalog) -> list:
    """Finish or roll back what an interrupted run left (single-host catalogs only)."""
    if not cfg.resolved_catalog_url().startswith("sqlite"):
        return []
    done = recover_pending(ArchiveContext.from_config(cfg, catalog=catalog))
    for path, note in done:
        log.info("recovered", extra={"path": path, "note": note})
    return done


def _quietly(fn, *args) -> None:
    """A queue write that may fail when the catalog is full: the rerun takes over a claim left behind."""
    try:
        fn(*args)
    except NoSpaceError:
        pass
