"""What crosses the process boundary to a worker: frozen, picklable dataclasses of plain values.

A task is ``run_task(path, settings, root) -> Outcome``: the path and its root are strings,
``settings`` is a ``TaskSettings``. Everything in these is a plain value (str, int, float, bool,
None, lists and dicts of them), so a task and its outcome pickle for a process pool or Ray, and
``dataclasses.asdict`` of one is JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field

from ..config import Config


@dataclass(frozen=True)
class PlaceMarks:
    """A shared catalog's marker ids (``places``): what a task checks again on the node running
    it before it touches a file. ``roots``: root -> id, for the roots recorded so far."""

    roots: dict[str, str] = field(default_factory=dict)
    vault: str | None = None

    def root(self, root: str | None) -> str | None:
        return self.roots.get(root) if root is not None else None


@dataclass(frozen=True)
class TaskSettings:
    """The run's settings as a task carries them.

    ``config``: the run's ``Config`` with the catalog URL and vault resolved (their defaults live
    in the state directory, an environment default a worker elsewhere may not share).
    ``policy_stamp``: ``"size:mtime_ns"`` of the policy file, so that a policy edited in place
    (same path) reaches the workers after a reload. ``places``: a shared catalog's marker ids,
    None with a single-host catalog."""

    config: Config
    policy_stamp: str | None = None
    places: PlaceMarks | None = None

    @classmethod
    def of(cls, cfg: Config, places: PlaceMarks | None = None) -> "TaskSettings":
        resolved = dataclasses.replace(cfg, catalog_url=cfg.resolved_catalog_url(),
                                       vault_dir=str(cfg.resolved_vault_dir()))
        stamp = None
        if cfg.policy and os.path.isfile(cfg.policy):
            st = os.stat(cfg.policy)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        return cls(resolved, stamp, places)

    def with_places(self, places: PlaceMarks | None) -> "TaskSettings":
        return dataclasses.replace(self, places=places)

    def context_key(self) -> str:
        """What the worker's archive context is built from (the places' ids change nothing in
        it, and are filled in as roots appear)."""
        data = {"config": dataclasses.asdict(self.config), "policy_stamp": self.policy_stamp}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Outcome:
    """What a task gives back. ``status``: committed, skipped, failed or unchanged (the unit of
    work's); error (a bug or a transient problem), busy (another node holds the file) or refused
    (this node does not see the shared root or vault); planned or unreadable (the dry run).
    ``retry``: the queue counts an attempt and tries again later. ``no_space``: the catalog's disk
    is full, so the run stops taking work. ``facts``: the rest of the record, JSON-able (action,
    rule, bytes_before, bytes_after, reasons, fallback, attempts, ...)."""

    path: str
    status: str
    retry: bool = False
    error: str | None = None
    no_space: bool = False
    seconds: float | None = None
    worker_pid: int | None = None
    facts: dict = field(default_factory=dict)


    @classmethod
    def of(cls, record: dict) -> "Outcome":
        """From a flat record (the keys above, and the facts beside them)."""
        own = {k: record[k] for k in _OUTCOME_FIELDS if record.get(k) is not None}
        return cls(**own, facts={k: v for k, v in record.items() if k not in _OUTCOME_FIELDS})

    def as_dict(self) -> dict:
        """The flat record the reports, logs and metrics read."""
        d = dict(self.facts)
        d.update(path=self.path, status=self.status, retry=self.retry)
        for k in ("error", "seconds", "worker_pid"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.no_space:
            d["no_space"] = True
        return d


_OUTCOME_FIELDS = ("path", "status", "retry", "error", "no_space", "seconds", "worker_pid")
