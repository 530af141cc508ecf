"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import logging
import threading

import pytest


@pytest.fixture(autouse=True)
def _archiver_logger_as_found():
    """Put the 'archiver' logger back after each test: an in-process CLI run calls
    ``setup_logging``, which gives it its own handler and stops propagation, and later tests'
    ``caplog`` (on the root logger) would then see nothing."""
    logger = logging.getLogger("archiver")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def _as_pg(cmd: str, cwd: str):
    if os.geteuid() == 0:  # postgres refuses to run as root
        return subprocess.run(["su", "postgres", "-s", "/bin/bash", "-c", cmd], cwd=cwd, capture_output=True,
                              text=True, timeout=120)
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=120)


def _pg_binary(name: str) -> str | None:
    """On PATH, else where Debian's postgresql package keeps it (/usr/lib/postgresql/<ver>/bin)."""
    import glob

    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return versions[-1] if versions else None


@pytest.fixture(scope="session")
def pg_server_url():
    """A throw-away local PostgreSQL cluster for the whole run (skips where PostgreSQL's server
    binaries, psycopg or a 'postgres' user are missing)."""
    pytest.importorskip("psycopg")
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries not installed")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user")
    d = tempfile.mkdtemp(prefix="archiver-pg-")
    if os.geteuid() == 0:
        shutil.chown(d, "postgres")
    port = 20000 + os.getpid() % 20000
    r = _as_pg(f"{initdb} -D {d}/data -A trust -U postgres >/dev/null && "
               f"{pg_ctl} -D {d}/data -o \"-k {d} -p {port} -c listen_addresses='' -c fsync=off\" -l {d}/log -w start", d)
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"cannot start a PostgreSQL cluster: {r.stderr[-500:]}")
    yield f"postgresql+psycopg://postgres@/postgres?host={d}&port={port}"
    _as_pg(f"{pg_ctl} -D {d}/data stop -m immediate", d)
    shutil.rmtree(d, ignore_errors=True)


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
