"""Catalog: schema migrations on open, state machine, append-only events, SQLite settings."""

import multiprocessing as mp

import pytest
from sqlalchemy import text

from archiver.catalog import queries as q
from archiver.catalog.db import current_revision, head_revision, open_catalog
from archiver.catalog.models import (CLASSIFIED, COMMITTED, DISCOVERED, FileVersion, WorkQueue)
from archiver.errors import CatalogError


@pytest.fixture
def cat(tmp_path):
    c = open_catalog(f"sqlite:///{tmp_path / 'cat.sqlite'}", create=True)
    yield c
    c.close()


def test_open_creates_and_migrates_schema(cat):
    assert {"file_versions", "events", "tags", "work_queue", "alembic_version"} <= set(cat.table_names())
    assert current_revision(cat.engine) == head_revision()


def test_sqlite_pragmas(cat):
    with cat.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_every_transition_logs_an_event(cat):
    with cat.session() as s:
        fv = q.transition(s, FileVersion(path="/p/a.jpg"), DISCOVERED, size=10)
    with cat.session() as s:
        fv = q.latest_version(s, "/p/a.jpg")
        q.transition(s, fv, CLASSIFIED, action="keep", rule="r", reasons=["because"])
        q.transition(s, fv, COMMITTED, disposition="keep")
    with cat.session() as s:
        fv = q.latest_version(s, "/p/a.jpg")
        evs = q.events_for(s, fv)
        assert [(e.from_state, e.to_state) for e in evs] == [
            (None, DISCOVERED), (DISCOVERED, CLASSIFIED), (CLASSIFIED, COMMITTED)]
        assert fv.reasons == ["because"]


def test_illegal_transition_refused_and_rolled_back(cat):
    with cat.session() as s:
        q.transition(s, FileVersion(path="/x"), DISCOVERED)
    with pytest.raises(CatalogError):
        with cat.session() as s:
            fv = q.latest_version(s, "/x")
            q.transition(s, fv, COMMITTED)  # discovered -> committed skips the checks
    with cat.session() as s:
        assert q.latest_version(s, "/x").state == DISCOVERED


def test_events_are_append_only_in_the_database(cat):
    with cat.session() as s:
        q.transition(s, FileVersion(path="/x"), DISCOVERED)
    for stmt in ("UPDATE events SET kind='x'", "DELETE FROM events"):
        with pytest.raises(Exception, match="append-only"):
            with cat.engine.begin() as conn:
                conn.execute(text(stmt))


def test_reopen_is_idempotent_and_tags(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    with open_catalog(url, create=True) as c:
        with c.session() as s:
            q.add_tag(s, "/a", "legal-hold")
            q.add_tag(s, "/a", "legal-hold")
    with open_catalog(url) as c:
        with c.session() as s:
            assert q.tags_for(s, "/a") == ["legal-hold"]
            assert q.held_paths(s) == {"/a"}


def test_newer_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    with open_catalog(url, create=True) as c:
        with c.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num='9999_future'"))
    with pytest.raises(CatalogError, match="newer"):
        open_catalog(url)


def test_work_queue_path_unique(cat):
    with cat.session() as s:
        s.add(WorkQueue(path="/a", root="/"))
    with pytest.raises(Exception):
        with cat.session() as s:
            s.add(WorkQueue(path="/a", root="/"))


def _open_and_write(url, i):
    c = open_catalog(url, create=True)
    with c.session() as s:
        q.transition(s, FileVersion(path=f"/f{i}"), DISCOVERED)
    c.close()


def test_concurrent_first_open_and_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_open_and_write, args=(url, i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with open_catalog(url) as c, c.session() as s:
        assert q.state_counts(s) == {DISCOVERED: 3}


def test_tag_command(tmp_path):
    from click.testing import CliRunner

    from archiver.app.main import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"catalog_url: sqlite:///{tmp_path / 'c.sqlite'}\n")
    open_catalog(f"sqlite:///{tmp_path / 'c.sqlite'}", create=True).close()  # tag never creates one
    r = CliRunner().invoke(main, ["tag", str(tmp_path / "a.jpg"), "--add", "legal-hold", "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    with open_catalog(f"sqlite:///{tmp_path / 'c.sqlite'}") as c, c.session() as s:
        assert q.held_paths(s) == {str(tmp_path / "a.jpg")}
    r = CliRunner().invoke(main, ["tag", str(tmp_path / "a.jpg"), "--remove", "legal-hold", "--config", str(cfg)])
    assert r.exit_code == 0 and ": -" in r.output


def test_old_catalog_is_upgraded_keeping_its_rows(tmp_path):
    """A catalog at the first revision (as an older archiver left it) is migrated on open."""
    from alembic import command

    from archiver.catalog.db import _alembic_config, make_engine

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    eng = make_engine(url)
    with eng.begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")
        conn.execute(text("INSERT INTO file_versions (path, state, created_at, updated_at) "
                          "VALUES ('/old.jpg', 'committed', '2026-01-01', '2026-01-01')"))
    eng.dispose()
    with open_catalog(url) as c:
        assert current_revision(c.engine) == head_revision() != "0001"
        with c.session() as s:
            r = q.latest_version(s, "/old.jpg")
            assert r.state == "committed" and r.mode is None


def test_the_migration_scripts_head_is_alembics():
    """Issue 27: catalog commands compare the catalog's revision with the scripts' head read
    without alembic; it must be the head alembic finds."""
    from archiver.catalog import db

    assert db.script_head() == db.head_revision()
