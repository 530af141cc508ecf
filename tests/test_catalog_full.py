"""The catalog's disk running full (F3): exit 13 with one line naming the catalog, the run stops
(it does not fail every remaining file), nothing is lost, and the same command finishes the work.

SQLITE_FULL comes from SQLite itself (``PRAGMA max_page_count``: the database cannot grow, and
SQLite says "database or disk is full" exactly as on a full filesystem) or from the DBAPI's commit
(``FullDisk``: every commit that would write fails from the n-th on, until ``free()``), so it goes
through SQLAlchemy as the real error does; nothing here patches archiver's own code. The commands
run as real processes (``RUNNER`` installs the fault, then runs ``archiver``): a rerun is a new
process, as it is for a user, and takes over the claims the stopped run left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED, FAILED, FileVersion
from archiver.testing.catalog import disk_problems, make_context, make_policy, write_jpeg
from archiver.errors import NoSpaceError
from archiver.storage.vault import Vault
from archiver.work import archive_file
from archiver.work.restore import produce


class FullDisk:
    """SQLITE_FULL from the DBAPI on every commit of a transaction that wrote something, from the
    ``after``-th such commit on (a filesystem that filled up), until ``free()``."""

    def __init__(self, monkeypatch, after: int):
        self.after, self.writes, self.failed, self.full = after, 0, 0, True
        real_begin, real_commit = SQLiteDialect_pysqlite.do_begin, SQLiteDialect_pysqlite.do_commit
        at_begin: dict[int, tuple] = {}  # connection -> (it, its total_changes when its transaction began)

        def do_begin(dialect, conn):
            raw = getattr(conn, "driver_connection", conn)
            at_begin[id(raw)] = (raw, raw.total_changes)  # (kept alive: its id is never reused)
            return real_begin(dialect, conn)

        def do_commit(dialect, conn):
            raw = getattr(conn, "driver_connection", conn)
            was = at_begin.pop(id(raw), None)
            wrote = was is not None and was[0] is raw and raw.total_changes != was[1]
            if self.full and wrote:
                self.writes += 1
                if self.writes >= self.after:
                    self.failed += 1
                    raise sqlite3.OperationalError("database or disk is full")
            return real_commit(dialect, conn)

        monkeypatch.setattr(SQLiteDialect_pysqlite, "do_begin", do_begin)
        monkeypatch.setattr(SQLiteDialect_pysqlite, "do_commit", do_commit)

    def free(self) -> None:
        self.full = False


def _grow_limit(monkeypatch, extra_pages: int) -> None:
    """Every catalog engine made from now on may grow the database by ``extra_pages`` pages only."""
    import archiver.catalog.db as db

    real = db.make_engine

    def make_engine(url):
        engine = real(url)

        @event.listens_for(engine, "connect")
        def _limit(dbapi_conn, _record):
            pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
            dbapi_conn.execute(f"PRAGMA max_page_count = {pages + extra_pages}")

        return engine

    monkeypatch.setattr(db, "make_engine", make_engine)


def _nothing_lost(ctx, originals: dict[Path, bytes]) -> None:
    """Every original is on disk as it was, or a committed row gives it back byte for byte."""
    for src, orig in originals.items():
        if src.exists():
            assert src.read_bytes() == orig, src
            continue
        with ctx.catalog.session() as s:
            rows = [r for r in q.versions(s, str(src)) if r.state == COMMITTED]
        assert rows, f"{src}: gone without a committed row"
        assert produce(rows[-1], ctx.vault, ctx.codecs)[0] == orig, src


# -- the mapping itself ------------------------------------------------------------------------------
def test_a_real_sqlite_full_is_a_catalog_full_error_naming_the_catalog(tmp_path, monkeypatch):
    ctx = make_context(tmp_path / "state")
    ctx.catalog.close()
    _grow_limit(monkeypatch, 2)
    from archiver.catalog.db import open_catalog

    cat = open_catalog(ctx.catalog.url)
    with pytest.raises(NoSpaceError) as e:  # archiver.errors.CatalogFullError
        for i in range(200):
            with cat.session() as s:
                q.transition(s, FileVersion(path=f"/p/{i}.jpg", reasons=["x" * 2000]), "discovered")
    assert e.value.exit_code == 13 and type(e.value).__name__ == "CatalogFullError"
    assert str(tmp_path / "state" / "catalog.sqlite") in str(e.value) and "not enough free disk space" in str(e.value)
    with cat.session() as s:  # what was committed before is all there, and the catalog still answers
        assert s.query(FileVersion).count() == i
    cat.close()


@pytest.mark.parametrize("n", range(1, 12))
def test_catalog_full_on_nth_write_stops_the_file_and_loses_nothing(tmp_path, monkeypatch, n):
    """As test_recovery's test_catalog_disk_full_on_nth_commit, with the error SQLite really
    raises: the unit of work stops with CatalogFullError, a NoSpaceError (no attempt to write
    "failed" into the full catalog), nothing is lost, and a rerun once there is space finishes."""
    srcs = [write_jpeg(tmp_path / "c" / "plain" / "a.jpg"), write_jpeg(tmp_path / "c" / "vault" / "b.jpg", 1)]
    originals = {p: p.read_bytes() for p in srcs}
    ctx = make_context(tmp_path / "state")
    disk = FullDisk(monkeypatch, n)
    raised = 0
    for src in originals:
        try:
            archive_file(src, ctx)
        except NoSpaceError:  # CatalogFullError
            raised += 1
    assert raised >= 1 and disk.failed == raised  # every failed write stopped its file at once
    _nothing_lost(ctx, originals)
    disk.free()
    for src in originals:
        assert archive_file(src, ctx).state in (COMMITTED, "unchanged")
    assert disk_problems(ctx, tmp_path / "c") == []
    _nothing_lost(ctx, originals)
    ctx.catalog.close()


# -- through the commands, as real processes ------------------------------------------------------------
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
RUNNER = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
import test_catalog_full as t

class _Patch:  # what pytest's monkeypatch does, for good: this process ends with the command
    def setattr(self, obj, name, value):
        setattr(obj, name, value)

kind, n = sys.argv[1].split(":")
if kind == "commits":
    t.FullDisk(_Patch(), int(n))
elif kind == "pages":
    t._grow_limit(_Patch(), int(n))
sys.argv = ["archiver", *sys.argv[2:]]
from archiver.app.main import main
main()
""".format(root=str(ROOT), tests=str(TESTS))


def _setup(tmp_path: Path, files: int = 6) -> dict:
    make_policy(tmp_path / "p.yaml")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"catalog_url: sqlite:///{tmp_path / 'home' / 'catalog.sqlite'}\nvault_dir: {tmp_path / 'vault'}\n"
                   f"policy: {tmp_path / 'p.yaml'}\nmin_free_bytes: 1\n")
    photos = tmp_path / "photos"
    srcs = [write_jpeg(photos / ("vault" if i % 2 else "plain") / f"f{i}.jpg", seed=i) for i in range(files)]
    env = dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home"), ARCHIVER_CONFIG=str(cfg), PYTHONPATH=str(ROOT))
    ctx = make_context(tmp_path / "home")  # the catalog exists (archive/migrate/daemon made it)
    ctx.vault = Vault(tmp_path / "vault")  # the config's
    return {"cfg": cfg, "photos": photos, "originals": {p: p.read_bytes() for p in srcs}, "env": env, "ctx": ctx,
            "tmp": tmp_path}


def _cli(e, *args, fault: str = "none:0", timeout: float = 300):
    """``archiver ARGS`` in a new process, with ``fault`` (commits:N, pages:N or none:0) installed."""
    return subprocess.run([sys.executable, "-c", RUNNER, fault, *map(str, args)], capture_output=True, text=True,
                          env=e["env"], cwd=e["tmp"], timeout=timeout, stdin=subprocess.DEVNULL)


def _one_line_13(r, e):
    """Exit 13 and one line (besides the progress lines of a run without a terminal, and the
    daemon's log) that says what is wrong and names the catalog."""
    lines = [ln for ln in r.stderr.splitlines()
             if ln.strip() and not re.match(r"(archive|archiving): \d+/|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", ln)]
    assert r.returncode == 13, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "not enough free disk space" in lines[0] and str(e["tmp"] / "home" / "catalog.sqlite") in lines[0], lines


def _rows(e) -> dict[str, list[str]]:
    with e["ctx"].catalog.session() as s:
        out: dict[str, list[str]] = {}
        for r in s.query(FileVersion).order_by(FileVersion.id):
            out.setdefault(r.path, []).append(r.state)
        return out


def _all_committed(e) -> None:
    rows = _rows(e)
    assert len(rows) == len(e["originals"]) and all(st[-1] == COMMITTED for st in rows.values()), rows
    r = _cli(e, "verify", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["checked"] == len(e["originals"]), r.stdout + r.stderr
    _nothing_lost(e["ctx"], e["originals"])


def test_archive_stops_with_exit_13_when_sqlite_says_full_and_a_rerun_finishes(tmp_path):
    """A real SQLITE_FULL (the database may grow by two pages only) in `archiver archive` of six
    files: exit 13 with one line naming the catalog, the files after it are not touched (not
    failed one by one), nothing is lost; with room again the same command finishes."""
    e = _setup(tmp_path)
    r = _cli(e, "archive", e["photos"], fault="pages:2")
    _one_line_13(r, e)
    rows = _rows(e)
    assert len(rows) < len(e["originals"])  # it stopped: the last files were never started
    assert not any(st[-1] == FAILED for st in rows.values())  # and none was marked failed for it
    _nothing_lost(e["ctx"], e["originals"])
    r = _cli(e, "archive", e["photos"])
    assert r.returncode == 0, r.stderr
    _all_committed(e)
    e["ctx"].catalog.close()


def _queue(e) -> list[dict]:
    from archiver.catalog.queue import WorkQueue

    return WorkQueue.for_catalog(e["ctx"].catalog).rows()


@pytest.mark.parametrize("fault", ["commits:3", "commits:12", "commits:30", "pages:2"])
def test_migrate_stops_with_exit_13_and_a_rerun_finishes(tmp_path, fault):
    """`archiver migrate` with the catalog full after a few writes: before, each file's failed
    commit was retried and counted file after file, and a traceback ending in "database or disk
    is full" (exit 1) ended it. Now: exit 13, one line, the rest untouched; a rerun finishes.
    With ``pages`` the catalog cannot grow but rows can still be updated in place (the queue's
    bookkeeping goes on working while every new file's row fails): the run must still stop,
    without counting failed attempts against the files."""
    e = _setup(tmp_path)
    r = _cli(e, "migrate", e["photos"], "--executor", "thread", "--workers", "1", fault=fault)
    _one_line_13(r, e)
    assert len(_rows(e)) < len(e["originals"])
    assert not [q for q in _queue(e) if q["state"] == "failed" or q.get("last_error")]
    assert "worker died" not in r.stderr and "Traceback" not in r.stderr
    _nothing_lost(e["ctx"], e["originals"])
    r = _cli(e, "migrate", e["photos"], "--executor", "thread", "--workers", "1", "--json")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    _all_committed(e)
    e["ctx"].catalog.close()


def test_migrate_json_carries_the_error(tmp_path):
    e = _setup(tmp_path, files=2)
    r = _cli(e, "migrate", e["photos"], "--executor", "thread", "--json", fault="commits:1")
    assert r.returncode == 13, r.stderr
    d = json.loads(r.stdout)
    assert d["exit_code"] == 13 and str(tmp_path / "home" / "catalog.sqlite") in d["error"]
    e["ctx"].catalog.close()


def test_tag_forget_and_restore_on_a_full_catalog(tmp_path):
    e = _setup(tmp_path, files=2)
    plain = next(p for p in e["originals"] if "plain" in str(p))
    assert _cli(e, "archive", e["photos"]).returncode == 0
    for args in (["tag", plain, "--add", "legal-hold"], ["forget", plain, "--force"]):
        _one_line_13(_cli(e, *args, fault="commits:1"), e)
    # restore gives the file back all the same, says that it could not be recorded, and exits 13
    r = _cli(e, "restore", plain, "--json", fault="commits:1")
    assert r.returncode == 13 and plain.read_bytes() == e["originals"][plain], r.stderr
    (res,) = json.loads(r.stdout)["results"]
    assert res["status"] == "restored" and "could not record" in res["message"] and res["exit_code"] == 13
    _one_line_13(r, e)
    r = _cli(e, "tag", plain, "--add", "legal-hold", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {str(plain): ["legal-hold"]}
    e["ctx"].catalog.close()


@pytest.mark.parametrize("fault", ["commits:1", "commits:12", "pages:2"])
def test_the_daemon_stops_with_exit_13_and_the_restart_finishes(tmp_path, fault):
    """The daemon with the catalog full after a few writes: it stops taking work, finishes the
    files in hand and exits 13 with one line, instead of failing file after file until
    max_attempts and going on; started again with room, it archives the rest. ``commits:1``: its
    own first queue write fails (before, the main loop retried it for minutes, with tracebacks)."""
    e = _setup(tmp_path)
    with e["cfg"].open("a") as f:
        f.write(f"roots: [{e['photos']}]\nsettle_seconds: 0.2\nworkers: 1\nmetrics_port: 0\n")
    r = _cli(e, "daemon", "--executor", "thread", fault=fault, timeout=120)
    _one_line_13(r, e)
    assert not [q for q in _queue(e) if q["state"] == "failed" or q.get("last_error")]
    assert len(_rows(e)) < len(e["originals"]) or any(st[-1] != COMMITTED for st in _rows(e).values())
    _nothing_lost(e["ctx"], e["originals"])
    d = subprocess.Popen([sys.executable, "-m", "archiver", "daemon", "--executor", "thread"], env=e["env"],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and d.poll() is None:
            rows = _rows(e)
            if len(rows) == len(e["originals"]) and all(st[-1] == COMMITTED for st in rows.values()):
                break
            time.sleep(0.3)
    finally:
        d.send_signal(signal.SIGTERM)
        assert d.wait(60) == 0, d.stderr.read()[-3000:]
    _all_committed(e)
    e["ctx"].catalog.close()
