"""The persistent queue: idempotent enqueue, atomic claims, retry/backoff, stale claims."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import Column, DateTime, Integer, String, Text, create_engine
from sqlalchemy.orm import declarative_base, sessionmaker

from archiver.catalog.queue import CLAIMED, DONE, FAILED, PENDING, WorkQueue, claimer_alive, utcnow, worker_id


def _local_model():
    Base = declarative_base()

    class WorkQueueRow(Base):
        __tablename__ = "work_queue"
        id = Column(Integer, primary_key=True)
        path = Column(String, unique=True, nullable=False)
        root = Column(String)
        enqueued_at = Column(DateTime)
        not_before = Column(DateTime)
        attempts = Column(Integer, default=0)
        state = Column(String, default="pending")
        claimed_by = Column(String)
        claimed_at = Column(DateTime)
        last_error = Column(Text)

    return Base, WorkQueueRow


@pytest.fixture
def wq(tmp_path):
    """The queue on the catalog's real model when it exists, else on the agreed columns."""
    url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    try:
        from archiver.catalog.db import Catalog
    except ImportError:  # pragma: no cover - before the catalog existed
        Base, model = _local_model()
        engine = create_engine(url, connect_args={"timeout": 30})
        Base.metadata.create_all(engine)
        return WorkQueue(sessionmaker(engine, expire_on_commit=False), model, backoff_seconds=10)
    return WorkQueue.for_catalog(Catalog(url, create=True), backoff_seconds=10)


def test_enqueue_is_idempotent(wq):
    assert wq.enqueue("/r/a.png", "/r")
    assert not wq.enqueue("/r/a.png", "/r")
    assert wq.enqueue_many([("/r/a.png", "/r"), ("/r/b.png", "/r")]) == 1
    assert wq.depth()[PENDING] == 2


def test_claim_complete_and_reopen(wq):
    wq.enqueue("/r/a.png", "/r")
    [item] = wq.claim("w1")
    assert item.path == "/r/a.png"
    assert wq.claim("w2") == []  # nothing left
    assert not wq.enqueue("/r/a.png", "/r")  # claimed rows are left alone
    wq.complete(item.id)
    assert wq.get("/r/a.png")["state"] == DONE
    assert not wq.enqueue("/r/a.png", "/r", reopen=False)
    assert wq.enqueue("/r/a.png", "/r")  # a new version re-opens it
    assert wq.get("/r/a.png")["state"] == PENDING


def test_claims_never_overlap_under_contention(wq, drain_concurrently):
    wq.enqueue_many([(f"/r/{i}.png", "/r") for i in range(60)])
    every = drain_concurrently(lambda k: wq, lambda k: f"w{k}")
    assert len(every) == 60 and len(set(every)) == 60


def test_root_filters(wq):
    wq.enqueue("/a/1.png", "/a")
    wq.enqueue("/b/1.png", "/b")
    assert [i.path for i in wq.claim("w", 5, exclude_roots=["/a"])] == ["/b/1.png"]
    assert wq.claim("w", 5, roots=["/b"]) == []
    assert [i.path for i in wq.claim("w", 5, roots=["/a"])] == ["/a/1.png"]


def test_fail_backs_off_then_gives_up(wq):
    wq.max_attempts = 3
    wq.enqueue("/r/a.png", "/r")
    [item] = wq.claim("w")
    assert wq.fail(item.id, "boom") == PENDING
    assert wq.claim("w") == []  # not before the backoff
    t0 = utcnow()
    wq.now = lambda: t0 + timedelta(seconds=11)
    [item] = wq.claim("w")
    assert wq.fail(item.id, "boom") == PENDING
    wq.now = lambda: t0 + timedelta(seconds=11 + 21)
    [item] = wq.claim("w")
    assert wq.fail(item.id, "boom again") == FAILED
    row = wq.get("/r/a.png")
    assert row["attempts"] == 3 and row["last_error"] == "boom again"
    wq.now = lambda: t0 + timedelta(days=1)
    assert wq.claim("w") == []


def test_release_does_not_count_an_attempt(wq):
    wq.enqueue("/r/a.png", "/r")
    [item] = wq.claim("w")
    wq.release(item.id)
    assert wq.get("/r/a.png")["attempts"] == 0
    assert wq.claim("w")


def test_stale_claims_of_dead_workers_are_requeued(wq):
    wq.enqueue_many([("/r/a.png", "/r"), ("/r/b.png", "/r"), ("/r/c.png", "/r")])
    dead = subprocess.run([sys.executable, "-c", "from archiver.catalog.queue import worker_id; print(worker_id())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert claimer_alive(dead) is False
    [a] = wq.claim(dead)
    [b] = wq.claim(worker_id())  # alive: kept
    [c] = wq.claim("elsewhere:1:1")  # another host: lease decides
    assert wq.requeue_stale() == 1
    assert wq.get(a.path)["state"] == PENDING and wq.get(a.path)["attempts"] == 1
    assert wq.get(b.path)["state"] == CLAIMED
    assert wq.get(c.path)["state"] == CLAIMED
    wq.now = lambda: utcnow() + timedelta(seconds=wq.lease_seconds + 1)
    assert wq.requeue_stale() == 1
    assert wq.get(c.path)["state"] == PENDING


def test_node_names_decide_liveness_and_renew_keeps_a_claim_fresh(wq):
    """A claim from another node is judged by its lease alone; its holder's heartbeat (renew)
    keeps it from going stale; a claim taken over is no longer renewed by the old holder."""
    wq.enqueue_many([("/r/a.png", "/r"), ("/r/b.png", "/r")])
    here = worker_id("daemon", "node-a")
    assert here.startswith("node-a:") and claimer_alive(here, "node-a") is True
    assert claimer_alive(here, "node-b") is None  # seen from another node: use the lease
    wq.node = "node-b"
    [a] = wq.claim(here)
    [b] = wq.claim(worker_id("daemon", "node-c"))
    t0 = utcnow()
    wq.now = lambda: t0 + timedelta(seconds=wq.lease_seconds * 0.75)
    assert wq.renew(here, [a.id]) == 1  # node-a is alive and says so; node-c is silent
    wq.now = lambda: t0 + timedelta(seconds=wq.lease_seconds * 1.5)
    assert wq.requeue_stale() == 1
    assert wq.get(a.path)["state"] == CLAIMED and wq.get(b.path)["state"] == PENDING
    assert wq.renew(worker_id("daemon", "node-c"), [b.id]) == 0  # lost: the old holder can tell

