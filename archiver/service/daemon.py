"""``archiver daemon``: watch roots, settle, queue in the catalog, archive with a worker pool.

Main thread: signals, the settle tracker, the queue and the pool (all queue writes and all pool
submissions happen here, so the flow is easy to reason about). Other threads only *notice*
files: watchdog observers and the reconciliation scanner feed the settle tracker.

Crash safety comes from three places: the queue is in the catalog (claimed rows of a dead
daemon are put back at start), ``archive_file`` is idempotent and resumable, and the daemon
claims only as many rows as it has idle workers, so on SIGTERM every claimed file is one
that is being worked on and is finished before exit.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from ..catalog.db import Catalog, shown_url
from ..catalog.locks import ServerCatalogLock
from ..catalog.queue import CLAIMED, DONE, FAILED, WorkQueue, worker_id
from ..config import Config, load_config
from ..errors import CatalogError, NoSpaceError
from ..policy.engine import load_policy
from ..storage.space import low_space
from ..storage.vault import Vault
from ..work import expire_vault
from .driver import Driver, resume
from .lock import InstanceLock, lock_path_for
from .messages import PlaceMarks, TaskSettings
from .metrics import ServiceMetrics
from .notify import sd_notify, watchdog_interval
from .places import Places, is_shared, require_shared_vault
from .roots import RootGuard
from .scan import already_handled, handled_map, is_handled, norm_root, root_of
from .settle import SettleTracker
from . import untaken
from .watcher import Watcher, is_candidate, walk

log = logging.getLogger("archiver.service.daemon")

#: consecutive failed main-loop rounds (with backoff, a few minutes) before the daemon gives up
MAX_LOOP_ERRORS = 12
#: how often the daemon expires vaulted originals past their retention (first time: at start)
VAULT_EXPIRY_SECONDS = 3600.0
#: how often it checks free space (it takes no new work while a filesystem is nearly full)
SPACE_CHECK_SECONDS = 30.0


class Daemon:
    def __init__(self, config_path: str | None = None, *, config: Config | None = None,
                 rebind_roots: bool = False, executor: str = "process", start_web=None):
        """``start_web(cfg, log) -> server | None``: what the caller serves beside the daemon (app/
        hands it the dashboard); the result's ``stop()`` is called at exit."""
        self.config_path = config_path
        self.start_web = start_web
        self.cfg = config or load_config(config_path)
        self.rebind_roots = rebind_roots
        self.executor_kind = executor
        self.stop_requested = 0
        self.reload_requested = False
        self.metrics = ServiceMetrics()
        self.me = worker_id("daemon", self.cfg.node_name)
        self.driver: Driver | None = None  # the pool and the claims in hand (made in run)
        self.dirty: set[str] = set()  # changed again while being worked on: redo afterwards
        self._scan_thread: threading.Thread | None = None
        self._scan_stop = threading.Event()
        self._last_scan = 0.0
        self._last_roots_check = 0.0
        self._last_depth = 0.0
        self._last_settle = 0.0
        self._last_ping = 0.0
        self._last_expiry = -VAULT_EXPIRY_SECONDS  # expire once right after the start
        self._last_space = 0.0
        self.space_problems: list[str] = []
        self.catalog_full: str | None = None  # the catalog's disk is full: stop, then exit 13
        self.places = None  # a shared catalog: places.Places, and the ids tasks check
        self.place_marks: dict = {"roots": {}, "vault": None}
        self._apply_config(self.cfg, first=True)

    @property
    def in_flight(self) -> dict:
        return self.driver.in_flight if self.driver is not None else {}

    def _task_settings(self) -> TaskSettings:
        """What every task carries; with a shared catalog, the marker ids recorded so far."""
        marks = None
        if is_shared(self.cfg.resolved_catalog_url()):
            marks = PlaceMarks(dict(self.place_marks["roots"]), self.place_marks["vault"])
        return TaskSettings.of(self.cfg, marks)

    def _settings_changed(self) -> None:
        self.task_settings = self._task_settings()
        if self.driver is not None:
            self.driver.settings = self.task_settings

    # -- configuration ---------------------------------------------------------------------
    def _apply_config(self, cfg: Config, first: bool = False) -> None:
        self.cfg = cfg
        self.roots = [norm_root(r) for r in cfg.roots]
        self.poll_roots = [norm_root(r) for r in cfg.poll_roots]
        self.all_roots = list(dict.fromkeys(self.roots + self.poll_roots))
        self._settings_changed()
        self.workers = max(1, int(cfg.workers))
        if first:
            self.settle = SettleTracker(cfg.settle_seconds)
        else:
            self.settle.settle_seconds = float(cfg.settle_seconds)

    def _reload(self) -> None:
        self.reload_requested = False
        try:
            cfg = load_config(self.config_path)
            load_policy(cfg.policy)
        except Exception as e:  # keep serving with the old config
            log.error("config reload failed; keeping the old config", extra={"error": str(e)})
            return
        if cfg.resolved_catalog_url() != self.cfg.resolved_catalog_url():
            log.error("catalog_url cannot change on reload; restart the daemon", extra={})
            cfg.catalog_url = self.cfg.catalog_url
        if cfg.node_name != self.cfg.node_name:
            log.error("node_name cannot change on reload; restart the daemon", extra={})
            cfg.node_name = self.cfg.node_name
        if cfg.metrics_port != self.cfg.metrics_port:
            log.warning("metrics_port change needs a restart", extra={})
        self._apply_config(cfg)
        self.queue.max_attempts, self.queue.backoff_seconds = cfg.max_attempts, cfg.retry_seconds
        self.queue.lease_seconds = float(cfg.lease_seconds)
        self.driver.lease = max(0.2, float(cfg.lease_seconds))
        self.driver.resize(self.workers)  # running files still finish; their futures stay valid
        self._check_roots(force=True)
        self._start_scan()  # new roots (or new policy) get looked at now
        log.info("config reloaded", extra={"roots": self.all_roots, "workers": self.workers,
                                           "settle_seconds": cfg.settle_seconds})

    # -- signals ---------------------------------------------------------------------------
    def _on_stop(self, signum, _frame) -> None:
        self.stop_requested += 1
        log.info("stop requested", extra={"signal": signal.Signals(signum).name, "in_flight": len(self.in_flight)})

    def _on_hup(self, _signum, _frame) -> None:
        self.reload_requested = True

    # -- roots and scanning ----------------------------------------------------------------
    def _check_roots(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_roots_check < max(1.0, min(5.0, self.cfg.settle_seconds)):
            return
        self._last_roots_check = now
        was_paused = set(self.guard.paused())
        status = self.guard.check_all(self.all_roots)
        for r, ok in status.items():
            self.metrics.root_up.labels(root=r).set(1 if ok else 0)
        self.metrics.roots_paused.set(sum(1 for ok in status.values() if not ok))
        self.watcher.set_roots(self.roots, self.poll_roots, lambda r: status.get(r, False))
        back = [r for r in was_paused if status.get(r)]
        if back:
            self._start_scan(back)  # what happened while it was away

    def _root_identity(self, root: str) -> str | None:
        """Shared catalog: is this node's ``root`` the one the other nodes see (its marker id)?"""
        mark, problem = self.places.register(root, "root")
        if mark is not None and self.place_marks["roots"].get(root) != mark:
            self.place_marks["roots"][root] = mark
            self._settings_changed()
        return problem

    def _start_scan(self, roots: list[str] | None = None) -> None:
        if self._scan_thread is not None and self._scan_thread.is_alive():
            if roots is None:
                return
        roots = list(roots or self.all_roots)
        self._last_scan = time.monotonic()
        t = threading.Thread(target=self._scan, args=(roots,), name="archiver-scan", daemon=True)
        self._scan_thread = t
        t.start()

    def _scan(self, roots: list[str]) -> None:
        """Reconciliation: everything on disk that the catalog has not handled gets settled and
        queued (catches events missed while down, overflowed inotify queues, network mounts)."""
        t0 = time.monotonic()
        found = 0
        for root in roots:
            if self._scan_stop.is_set():
                return
            if not self.guard.check(root):
                log.warning("scan skipped: root unavailable", extra={"root": root})
                continue
            try:
                known = handled_map(self.catalog, root)
            except Exception as e:
                log.error("scan failed to read the catalog", extra={"root": root, "error": str(e)})
                continue
            passed: list[tuple[str, str]] = []
            for path in walk(root, exclude=(str(self.cfg.state_dir), str(self.cfg.resolved_vault_dir())),
                             not_taken=passed):
                if self._scan_stop.is_set():
                    return
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if not is_handled(known.get(path), st):
                    self.settle.touch(path)
                    found += 1
            if passed:  # every scan says which files it leaves alone, by type and why
                log.info("not taken", extra={"root": root, "files": len(passed), "not_taken": untaken.group(passed)})
        self.metrics.scans.inc()
        self.metrics.last_scan.set(time.time())
        log.info("reconciliation scan done", extra={"roots": roots, "candidates": found,
                                                     "seconds": round(time.monotonic() - t0, 3)})

    # -- the loop --------------------------------------------------------------------------
    def _settled_to_queue(self) -> None:
        now = time.monotonic()
        if now - self._last_settle < min(0.5, max(0.05, self.cfg.settle_seconds / 4)):
            return
        self._last_settle = now
        for path in self.settle.ready():
            root = root_of(path, self.all_roots)
            if root is None or not self._wanted(path, root):
                continue
            if self.guard.is_paused(root):
                continue  # the scan after it comes back will find it again
            try:
                if already_handled(self.catalog, path):
                    continue
            except FileNotFoundError:
                continue
            if self.queue.enqueue(path, root, reopen=False):
                log.debug("queued", extra={"path": path})
                continue
            row = self.queue.get(path)
            if row and row["state"] == CLAIMED:
                self.dirty.add(path)
            elif row and row["state"] in (DONE, FAILED):
                # a finished row is reopened only for a new version; look again, since another
                # node may have finished it since the check above
                try:
                    if already_handled(self.catalog, path):
                        continue
                except FileNotFoundError:
                    continue
                if self.queue.enqueue(path, root):
                    log.debug("queued again", extra={"path": path})

    def _wanted(self, path: str, root: str) -> bool:
        """A candidate name, not in a hidden directory below the root (snapshots, trash), and
        not inside archiver's own state or vault (if someone put those under a root)."""
        if not is_candidate(path):
            return False
        rel = os.path.relpath(path, root)
        if any(part.startswith(".") for part in Path(rel).parts[:-1]):
            return False
        for own in (self.cfg.state_dir, self.cfg.resolved_vault_dir()):
            own = os.path.abspath(own)
            if path.startswith(own.rstrip(os.sep) + os.sep):
                return False
        return True

    def _fill_workers(self) -> None:
        if self.stop_requested or self.space_problems:
            return
        self.driver.fill(roots=self.all_roots, exclude_roots=list(self.guard.paused()))

    def _collect(self) -> None:
        for done in self.driver.collect(restart=not self.stop_requested):
            item, out = done.item, done.outcome.as_dict()
            if done.died:
                self.metrics.failures.inc()
            if out.get("no_space"):  # not this file's fault: no attempt counted, the restart does it
                self._out_of_space(str(out.get("error")))
            elif out.get("retry"):
                log.warning("work failed", extra={"path": item.path, "queue_state": done.state,
                                                  "attempt": item.attempts + 1, "error": out.get("error")})
            else:
                extra = {k: out.get(k) for k in (
                    "path", "status", "action", "rule", "fallback", "bytes_before", "bytes_after", "seconds", "error")
                    if out.get(k) is not None}
                if out.get("reasons"):
                    extra["reason"] = untaken.kept_for_type(out["reasons"]) or out["reasons"][0]
                # a skipped file (truncated, corrupt, not an image) is something an operator must see
                bad = out.get("status") in ("skipped", "failed") and out.get("error")
                log.log(logging.WARNING if bad else logging.INFO, "not archived" if bad else "handled", extra=extra)
            self.metrics.observe_outcome(out)
            if item.path in self.dirty:
                self.dirty.discard(item.path)
                self.settle.touch(item.path)

    def _out_of_space(self, why: str) -> None:
        """The catalog's disk is full: take no new work, finish the files in hand, then exit 13
        (``run`` raises ``NoSpaceError``); started again, the daemon takes up where it stopped."""
        if self.catalog_full is None:
            self.catalog_full = why
            log.error("catalog full: stopping after the files in hand", extra={"error": why})
        self.stop_requested = max(self.stop_requested, 1)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_depth >= 2.0:
            self._last_depth = now
            depth = self.queue.depth(self.all_roots)
            for k, v in depth.items():
                self.metrics.queue_depth.labels(state=k).set(v)
            self.metrics.settling.set(len(self.settle))
            sd_notify(f"STATUS=pending={depth['pending']} working={len(self.in_flight)} "
                      f"settling={len(self.settle)} paused_roots={len(self.guard.paused())}")
        self.metrics.in_flight.set(len(self.in_flight))
        if self.cfg.rescan_seconds and now - self._last_scan >= self.cfg.rescan_seconds:
            self._start_scan()
        self.driver.upkeep(now)  # renew the claims in hand, take over those of dead nodes
        if now - self._last_expiry >= VAULT_EXPIRY_SECONDS:
            self._last_expiry = now
            self._expire_vault()
        if now - self._last_space >= SPACE_CHECK_SECONDS:
            self._last_space = now
            self._check_space()
        if self._wd and now - self._last_ping >= self._wd:
            self._last_ping = now
            sd_notify("WATCHDOG=1")

    def _expire_vault(self, now=None) -> None:
        """The daemon expires the vault itself (originals past their retention, never under legal
        hold, never the last good copy), so that disk use goes down without a separate timer."""
        try:
            res = expire_vault(self.catalog, Vault(self.cfg.resolved_vault_dir()), now=now)
        except Exception as e:  # noqa: BLE001 - retried at the next interval
            log.warning("vault expiry failed", extra={"error": str(e)})
            return
        if res.gone:
            log.info("vault expired", extra={"originals": len(res.gone)})
        if res.held:  # said at every expiry (hourly) until someone restores or releases them
            log.warning("vault originals kept past their retention: the last good copy",
                        extra={"originals": len(res.held), "held": res.held[:20]})

    def _check_space(self) -> None:
        """Pause claiming new work while a filesystem we write to is nearly full (and say so)."""
        problems = low_space([self.cfg.state_dir, self.cfg.resolved_vault_dir(), *self.all_roots],
                             min_free=self.cfg.min_free_bytes)
        if problems and not self.space_problems:
            log.warning("low on disk space: not taking new work", extra={"problems": problems})
        elif self.space_problems and not problems:
            log.info("disk space available again: taking work", extra={})
        self.space_problems = problems

    def run(self) -> int:
        load_policy(self.cfg.policy)  # a broken policy stops the start with a clear error
        require_shared_vault(self.cfg)
        problems = low_space([self.cfg.state_dir, self.cfg.resolved_vault_dir(), *self.all_roots],
                             min_free=self.cfg.min_free_bytes)
        if problems:
            raise NoSpaceError("not enough free disk space to start: " + "; ".join(problems))
        state_dir = self.cfg.state_dir
        url = self.cfg.resolved_catalog_url()
        self.lock = InstanceLock(lock_path_for(url, state_dir)).acquire()
        server_lock = None
        try:
            catalog = Catalog(url, create=True)  # where none ever was; never over a lost one
            server_lock = ServerCatalogLock(catalog.engine, self.cfg.node_name).acquire()
            return self._run(catalog, state_dir)
        finally:
            if server_lock is not None:
                server_lock.release()
            self.lock.release()

    def _run(self, catalog, state_dir: Path) -> int:
        self.catalog = catalog
        self.queue = WorkQueue.for_catalog(catalog, max_attempts=self.cfg.max_attempts,
                                           backoff_seconds=self.cfg.retry_seconds,
                                           lease_seconds=float(self.cfg.lease_seconds), node=self.cfg.node_name)
        identity = None
        if is_shared(catalog.url):
            self.places = Places(catalog, self.queue.node)
            vault = self.cfg.resolved_vault_dir()
            vault.mkdir(parents=True, exist_ok=True)
            mark, problem = self.places.register(str(vault), "vault")
            if problem:
                raise CatalogError(problem)
            self.place_marks["vault"] = mark
            self._settings_changed()
            identity = self._root_identity
        self.guard = RootGuard(state_dir / "roots.json", rebind=self.rebind_roots, identity=identity)
        self.watcher = Watcher(self.settle.touch)
        self._wd = watchdog_interval()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        stale = resume(self.cfg, catalog, self.queue)  # single-host catalogs: finish what a crash left
        if not self.all_roots:
            log.warning("no roots configured; only queued work will be done", extra={})
        self.driver = Driver(self.queue, self.me, self.task_settings, workers=self.workers,
                             executor=self.executor_kind, lease_seconds=self.cfg.lease_seconds, logger=log)
        server = self.metrics.serve(self.cfg.metrics_port)
        web = self.start_web(self.cfg, log) if self.start_web else None
        self.watcher.start()
        self._check_roots(force=True)
        self._start_scan()
        log.info("daemon started", extra={"pid": os.getpid(), "node": self.queue.node, "claimer": self.me,
                                          "roots": self.all_roots, "workers": self.workers,
                                          "catalog": shown_url(catalog.url), "requeued_stale": stale,
                                          "settle_seconds": self.cfg.settle_seconds,
                                          "metrics_port": self.cfg.metrics_port or None})
        sd_notify("READY=1")
        tick = max(0.02, min(0.25, self.cfg.settle_seconds / 5))
        errors = 0
        try:
            while True:
                if self.stop_requested:
                    break
                try:
                    if self.reload_requested:
                        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
                        self._reload()
                        sd_notify("READY=1")
                    self._check_roots()
                    self._settled_to_queue()
                    self._collect()
                    self._fill_workers()
                    self._housekeeping()
                    errors = 0
                except NoSpaceError as e:  # the catalog's disk is full: retrying every round only fails again
                    self._out_of_space(str(e))
                except Exception as e:  # e.g. the catalog busy or unreachable for a while
                    errors += 1
                    log.exception("main loop error; retrying", extra={"error": str(e), "consecutive": errors})
                    if errors >= MAX_LOOP_ERRORS:
                        raise  # persistently broken: exit non-zero and let the supervisor restart us
                    time.sleep(min(30.0, 0.5 * 2 ** errors))
                    continue
                self.driver.wait(tick)  # wakes up as soon as a file is done: no idle gap per file
            # graceful stop: take no new work, finish the files in hand
            sd_notify("STOPPING=1")
            log.info("stopping: finishing files in hand", extra={"in_flight": len(self.in_flight)})
            self._scan_stop.set()
            self.watcher.stop()
            while self.in_flight and self.stop_requested < 2:
                self._collect()
                self._housekeeping()
                time.sleep(0.05)
            if self.in_flight:  # a second signal: give up on them; the restart resumes them
                log.warning("abandoning files in hand", extra={"paths": [i.path for i in self.in_flight.values()]})
                self.driver.abandon()
                return 1
            self.driver.close()
            log.info("stopped", extra={})
            if self.catalog_full:
                raise NoSpaceError(self.catalog_full)
            return 0
        finally:
            self._scan_stop.set()
            self.watcher.stop()
            if server is not None:
                server.shutdown()
            if web is not None:
                web.stop()
            catalog.close()

