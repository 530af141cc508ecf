"""The catalog on PostgreSQL: migrations, the append-only trigger, and a full archive / crash /
restore cycle, on a throw-away local cluster (skipped where PostgreSQL or psycopg is missing)."""

import os
import subprocess
import sys

import pytest
from sqlalchemy import text


def test_migrations_and_append_only_trigger(fresh_pg_url):
    from archiver.catalog import queries as q
    from archiver.catalog.db import current_revision, head_revision, open_catalog
    from archiver.catalog.models import DISCOVERED, FileVersion

    with open_catalog(fresh_pg_url, create=True) as c:
        assert {"file_versions", "events", "tags", "work_queue"} <= set(c.table_names())
        assert current_revision(c.engine) == head_revision()
        with c.session() as s:
            q.transition(s, FileVersion(path="/a", reasons=["x"]), DISCOVERED)
        with pytest.raises(Exception, match="append-only"):
            with c.engine.begin() as conn:
                conn.execute(text("DELETE FROM events"))
    with open_catalog(fresh_pg_url) as c:  # reopening does not migrate twice
        with c.session() as s:
            assert q.latest_version(s, "/a").reasons == ["x"]


def test_archive_crash_restore_on_postgres(tmp_path, fresh_pg_url):
    from archiver.work import archive_file
    from archiver.work.restore import restore
    from archiver.testing.catalog import disk_problems, make_context, write_jpeg
    from archiver.work.verify import stats, verify

    src = write_jpeg(tmp_path / "c" / "vault" / "a.jpg")
    orig = src.read_bytes()
    runner = ("import sys; from archiver.work import archive_file; from archiver.testing.catalog import make_context;"
              "archive_file(sys.argv[2], make_context(sys.argv[1], catalog_url=sys.argv[3]))")
    r = subprocess.run([sys.executable, "-c", runner, str(tmp_path / "state"), str(src), fresh_pg_url],
                       env=dict(os.environ, ARCHIVER_FAULT="verified"), capture_output=True, timeout=300)
    assert r.returncode == -9 and src.read_bytes() == orig
    ctx = make_context(tmp_path / "state", catalog_url=fresh_pg_url)
    o = archive_file(src, ctx)
    assert o.state == "committed" and o.recovered and not src.exists()
    assert disk_problems(ctx, tmp_path / "c") == []
    assert verify(ctx.catalog, vault=ctx.vault).mismatches == []
    assert stats(ctx.catalog)["total"]["files"] == 1
    assert restore(ctx.catalog, [str(src)], vault=ctx.vault)[0].status == "restored" and src.read_bytes() == orig
    ctx.catalog.close()
