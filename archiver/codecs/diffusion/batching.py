"""Cross-file batching of the diffusion codec's device work (issue 27, "A GPU when there is one").

While several files are in flight in one process, each in its own worker thread, their device
calls (the encoder's analysis of an image, the denoiser + decoder of a latent) are handed to one
``Batcher``. Its single thread gathers the calls that can run together (same kind, backbone and
tensor shape; for a decode also the same timestep and step count), runs them as one batch and
hands each caller its own result. The per-file code does not change: ``pipeline`` asks
``active_batcher()`` and, when there is one, goes through it instead of calling the model itself.

A batch runs when it is full (``max_batch``), when every client thread is waiting on the
batcher (nothing more can arrive), or ``wait_seconds`` after its oldest call. A batch that fails
is run again file by file, so an error reaches only the file that caused it. ``close()`` fails
every waiting call (and any later one) with ``BatcherClosed``: no caller waits forever.

This module imports no torch: the batch functions come from the callers (``pipeline``).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Optional, Sequence

from ...errors import ArchiverError

#: files whose device work one batch may hold, when the caller gives no number
DEFAULT_MAX_BATCH = 16
#: how long the oldest waiting call waits for others to join its batch
DEFAULT_WAIT_SECONDS = 0.01


class BatcherClosed(ArchiverError):
    """The batcher stopped (the run ended or was interrupted) before this call ran."""


@dataclass
class _Call:
    key: tuple
    item: Any
    run_batch: Callable[[list], Sequence]
    future: Future = field(default_factory=Future)
    since: float = field(default_factory=time.monotonic)


class Batcher:
    """Runs device calls from many threads as batches, on one thread of its own.

    ``run(key, item, run_batch)`` blocks until ``run_batch([item, ...])`` (called with the items
    of every call with the same ``key``, at most ``max_batch``) has returned, and gives back this
    item's entry of its result (or raises its error). ``key[0]`` names the kind of work (for
    ``stats``); calls with equal keys must be runnable as one batch by either call's ``run_batch``.
    ``client()``: the block in which a thread works on one file; when every client is waiting,
    the batch runs at once instead of after ``wait_seconds``."""

    def __init__(self, *, max_batch: int = DEFAULT_MAX_BATCH, wait_seconds: float = DEFAULT_WAIT_SECONDS):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.max_batch = int(max_batch)
        self.wait_seconds = max(0.0, float(wait_seconds))
        self._cond = threading.Condition()
        self._pending: list[_Call] = []
        self._clients = 0
        self._closed = False
        self._sizes: dict[str, list[int]] = {}
        self._busy = 0.0
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._serve, name="archiver-batcher", daemon=True)
        self._thread.start()

    # -- the callers' side ---------------------------------------------------------------------
    def run(self, key: Hashable, item: Any, run_batch: Callable[[list], Sequence]) -> Any:
        """This item's result of a batch run with other callers' items of the same ``key``."""
        call = _Call(tuple(key) if isinstance(key, tuple) else (key,), item, run_batch)
        with self._cond:
            if self._closed:
                raise BatcherClosed("the device batcher has stopped (the run ended or was interrupted)")
            self._pending.append(call)
            self._cond.notify_all()
        return call.future.result()

    @contextmanager
    def client(self) -> Iterator[None]:
        """A thread working on one file: counted so that the batcher knows when all of them wait."""
        with self._cond:
            self._clients += 1
        try:
            yield
        finally:
            with self._cond:
                self._clients -= 1
                self._cond.notify_all()  # the others may all be waiting now

    def close(self) -> None:
        """Stop: every waiting call and every later one raises ``BatcherClosed``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._fail_pending()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)  # a batch still running finishes and answers its callers

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict:
        """Batches run and their sizes, overall and per kind of work; ``busy_seconds``: time the
        batcher's thread spent running batches (``busy_share`` of its life)."""
        with self._cond:
            sizes = {k: list(v) for k, v in self._sizes.items()}
            busy, life = self._busy, time.monotonic() - self._started
        every = [n for v in sizes.values() for n in v]

        def summary(v: list[int]) -> dict:
            return {"batches": len(v), "items": sum(v), "mean_batch": round(sum(v) / len(v), 2) if v else None,
                    "largest": max(v, default=0)}

        return {**summary(every), "max_batch": self.max_batch, "by_kind": {k: summary(v) for k, v in sizes.items()},
                "busy_seconds": round(busy, 3), "busy_share": round(busy / life, 3) if life > 0 else None}

    # -- the batcher's thread --------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._run(batch)
        finally:
            with self._cond:
                self._closed = True
            self._fail_pending()

    def _next_batch(self) -> Optional[list[_Call]]:
        """The oldest call's group, once it is full, everyone waits, or its wait is over."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._pending:
                    first = self._pending[0]
                    group = [c for c in self._pending if c.key == first.key][:self.max_batch]
                    late = time.monotonic() - first.since >= self.wait_seconds
                    all_wait = self._clients > 0 and len(self._pending) >= self._clients
                    if len(group) >= self.max_batch or all_wait or late:
                        taken = set(map(id, group))
                        self._pending = [c for c in self._pending if id(c) not in taken]
                        return group
                    self._cond.wait(max(0.0, first.since + self.wait_seconds - time.monotonic()))
                else:
                    self._cond.wait()

    def _run(self, batch: list[_Call]) -> None:
        t0 = time.monotonic()
        try:
            results = list(batch[0].run_batch([c.item for c in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        except BaseException as e:  # noqa: BLE001 - it goes to the callers, never kills this thread
            if len(batch) > 1:  # find the file at fault: each alone, so the others still succeed
                for c in batch:
                    self._run([c])
                return
            self._record(batch, t0)
            batch[0].future.set_exception(e)
            return
        self._record(batch, t0)
        for c, r in zip(batch, results):
            c.future.set_result(r)

    def _record(self, batch: list[_Call], t0: float) -> None:
        with self._cond:
            self._sizes.setdefault(str(batch[0].key[0]), []).append(len(batch))
            self._busy += time.monotonic() - t0

    def _fail_pending(self) -> None:
        with self._cond:
            left, self._pending = self._pending, []
        for c in left:
            if not c.future.done():
                c.future.set_exception(BatcherClosed("the device batcher stopped before this file's diffusion work ran "
                                                     "(the run ended or was interrupted)"))


_active: Optional[Batcher] = None


def active_batcher() -> Optional[Batcher]:
    """The batcher this process's diffusion calls go through, or None (each call runs alone)."""
    return _active


@contextmanager
def batching(batcher: Batcher) -> Iterator[Batcher]:
    """Route this process's diffusion device calls through ``batcher`` for the block; closed after."""
    global _active
    if _active is not None:
        batcher.close()
        raise RuntimeError("a device batcher is already active in this process")
    _active = batcher
    try:
        yield batcher
    finally:
        _active = None
        batcher.close()
