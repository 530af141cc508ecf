"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import pwd
import logging
import threading

import pytest

from archiver.testing.postgres import ClusterUnavailable, start_cluster


@pytest.fixture(autouse=True)
def _archiver_logger_as_found():
    """Put the 'archiver' logger back after each test: an in-process CLI run calls
    ``setup_logging``, which gives it its own handler and stops propagation, and later tests'
    ``caplog`` (on the root logger) would then see nothing."""
    logger = logging.getLogger("archiver")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(scope="session")
def pg_server_url():
    """A throw-away local PostgreSQL cluster for the whole run (skips where PostgreSQL's server
    binaries, psycopg or a 'postgres' user are missing)."""
    pytest.importorskip("psycopg")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user")
    try:
        url, stop = start_cluster("archiver-pg-")
    except ClusterUnavailable as e:
        pytest.skip(str(e))
    yield url
    stop()


@pytest.fixture
def fresh_pg_url(pg_server_url, tmp_path, monkeypatch):
    """A new, empty database per test (and a state directory of its own, where the marker that
    records a server catalog's creation is kept: not the user's)."""
    from sqlalchemy import text

    monkeypatch.setenv("ARCHIVER_HOME", str(tmp_path / "pg-state"))
    from archiver.catalog.db import make_engine

    name = f"t{os.urandom(4).hex()}"
    eng = make_engine(pg_server_url)
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    eng.dispose()
    return pg_server_url.replace("/postgres?", f"/{name}?")


@pytest.fixture
def drain_concurrently():
    """``drain(queue_for, owner, workers=4, limit=3, complete=False)``: ``workers`` threads each
    claim batches from their own queue handle (``queue_for(k)``, as owner ``owner(k)``) until
    nothing is left, completing them if asked; returns every claimed path."""

    def drain(queue_for, owner, workers: int = 4, limit: int = 3, complete: bool = False) -> list[str]:
        got: list[list[str]] = [[] for _ in range(workers)]

        def run(k):
            q = queue_for(k)
            while True:
                items = q.claim(owner(k), limit=limit)
                if not items:
                    return
                got[k].extend(i.path for i in items)
                if complete:
                    for i in items:
                        q.complete(i.id)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [path for g in got for path in g]

    return drain


@pytest.fixture
def interrupt_on_call(monkeypatch):
    """``interrupt(module, name, n)``: the n-th call of ``module.name`` raises KeyboardInterrupt
    (a user's Ctrl-C mid-training); ``monkeypatch.undo``-safe. Returns the original."""
    def interrupt(module, name: str, n: int):
        real, calls = getattr(module, name), []

        def wrapped(*a, **k):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*a, **k)

        monkeypatch.setattr(module, name, wrapped)
        return real

    return interrupt
