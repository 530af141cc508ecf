"""The catalog on PostgreSQL: migrations, the append-only trigger, and a full archive / crash /
restore cycle, on a throw-away local cluster (skipped where PostgreSQL or psycopg is missing)."""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest
from sqlalchemy import text

pytest.importorskip("psycopg")
if not shutil.which("initdb") or not shutil.which("pg_ctl"):
    pytest.skip("PostgreSQL server binaries not installed", allow_module_level=True)


def _as_pg(cmd: str, cwd: str):
    if os.geteuid() == 0:  # postgres refuses to run as root
        return subprocess.run(["su", "postgres", "-s", "/bin/bash", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                              timeout=120)
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def pg_url():
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user")
    d = tempfile.mkdtemp(prefix="archiver-pg-")
    if os.geteuid() == 0:
        shutil.chown(d, "postgres")
    port = 20000 + os.getpid() % 20000
    r = _as_pg(f"initdb -D {d}/data -A trust -U postgres >/dev/null && "
               f"pg_ctl -D {d}/data -o \"-k {d} -p {port} -c listen_addresses='' -c fsync=off\" -l {d}/log -w start", d)
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"cannot start a PostgreSQL cluster: {r.stderr[-500:]}")
    yield f"postgresql+psycopg://postgres@/postgres?host={d}&port={port}"
    _as_pg(f"pg_ctl -D {d}/data stop -m immediate", d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fresh_url(pg_url):
    """A new, empty database per test."""
    from archiver.catalog.db import make_engine

    name = f"t{os.urandom(4).hex()}"
    eng = make_engine(pg_url)
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    eng.dispose()
    return pg_url.replace("/postgres?", f"/{name}?")


def test_migrations_and_append_only_trigger(fresh_url):
    from archiver.catalog import queries as q
    from archiver.catalog.db import current_revision, head_revision, open_catalog
    from archiver.catalog.models import DISCOVERED, FileVersion

    with open_catalog(fresh_url) as c:
        assert {"file_versions", "events", "tags", "work_queue"} <= set(c.table_names())
        assert current_revision(c.engine) == head_revision()
        with c.session() as s:
            q.transition(s, FileVersion(path="/a", reasons=["x"]), DISCOVERED)
        with pytest.raises(Exception, match="append-only"):
            with c.engine.begin() as conn:
                conn.execute(text("DELETE FROM events"))
    with open_catalog(fresh_url) as c:  # reopening does not migrate twice
        with c.session() as s:
            assert q.latest_version(s, "/a").reasons == ["x"]


def test_archive_crash_restore_on_postgres(tmp_path, fresh_url):
    from archiver.archive import archive_file
    from archiver.catalog.restore import restore
    from archiver.catalog.testing import disk_problems, make_context, write_jpeg
    from archiver.catalog.verify import stats, verify

    src = write_jpeg(tmp_path / "c" / "vault" / "a.jpg")
    orig = src.read_bytes()
    runner = ("import sys; from archiver.archive import archive_file; from archiver.catalog.testing import make_context;"
              "archive_file(sys.argv[2], make_context(sys.argv[1], catalog_url=sys.argv[3]))")
    r = subprocess.run([sys.executable, "-c", runner, str(tmp_path / "state"), str(src), fresh_url],
                       env=dict(os.environ, ARCHIVER_FAULT="verified"), capture_output=True, timeout=300)
    assert r.returncode == -9 and src.read_bytes() == orig
    ctx = make_context(tmp_path / "state", catalog_url=fresh_url)
    o = archive_file(src, ctx)
    assert o.state == "committed" and o.recovered and not src.exists()
    assert disk_problems(ctx, tmp_path / "c") == []
    assert verify(ctx.catalog, vault=ctx.vault).mismatches == []
    assert stats(ctx.catalog)["total"]["files"] == 1
    assert restore(ctx.catalog, [str(src)], vault=ctx.vault)[0].status == "restored" and src.read_bytes() == orig
    ctx.catalog.close()
