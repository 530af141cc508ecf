"""The queue and the daemon's cross-host lock on PostgreSQL (the catalog for several hosts or a
Ray cluster), on a throw-away local cluster; skipped where PostgreSQL or psycopg is missing."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def catalog(fresh_pg_url):
    from archiver.catalog.db import Catalog

    cat = Catalog(fresh_pg_url, create=True)
    yield cat
    cat.close()


def test_claims_never_overlap_on_postgresql(catalog, drain_concurrently):
    from archiver.catalog.queue import WorkQueue

    wq = WorkQueue.for_catalog(catalog)
    assert wq.enqueue_many([(f"/r/{i}.png", "/r") for i in range(80)]) == 80
    assert wq.enqueue_many([(f"/r/{i}.png", "/r") for i in range(80)]) == 0
    every = drain_concurrently(lambda k: WorkQueue.for_catalog(catalog), lambda k: f"host{k}:1:1", complete=True)
    assert len(every) == 80 and len(set(every)) == 80
    assert wq.depth()["done"] == 80


def test_server_lock_allows_one_daemon_per_node_name(catalog):
    from archiver.catalog.db import Catalog
    from archiver.errors import CatalogError
    from archiver.catalog.locks import ServerCatalogLock

    other = Catalog(catalog.url)  # as if from another host: a separate engine and connection
    try:
        first = ServerCatalogLock(catalog.engine, "node-a").acquire()
        with pytest.raises(CatalogError, match="another archiver daemon with node name 'node-a'"):
            ServerCatalogLock(other.engine, "node-a").acquire()
        second = ServerCatalogLock(other.engine, "node-b").acquire()  # another node shares the catalog
        first.release()
        ServerCatalogLock(other.engine, "node-a").acquire().release()
        second.release()
    finally:
        other.close()


def test_path_lock_excludes_other_nodes_and_dies_with_its_connection(catalog, tmp_path):
    """One worker per file across nodes: a second node is told 'busy'; a killed holder's lock is
    dropped by the server (its connection dies with it)."""
    import subprocess
    import sys

    from archiver.catalog.db import Catalog
    from archiver.catalog.locks import catalog_path_lock

    other = Catalog(catalog.url)
    try:
        with catalog_path_lock(catalog.engine, "/r/a.png") as mine:
            assert mine
            with catalog_path_lock(other.engine, "/r/a.png") as theirs:
                assert not theirs
            with catalog_path_lock(other.engine, "/r/b.png") as theirs:
                assert theirs  # other files are not held up
        with catalog_path_lock(other.engine, "/r/a.png") as theirs:
            assert theirs
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; from archiver.catalog.db import Catalog;"
             "from archiver.catalog.locks import catalog_path_lock;"
             "c = Catalog(sys.argv[1]);\nwith catalog_path_lock(c.engine, '/r/a.png') as m:\n"
             " print(m, flush=True); time.sleep(600)", catalog.url], stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "True"
        with catalog_path_lock(other.engine, "/r/a.png") as theirs:
            assert not theirs
        holder.kill()
        holder.wait(10)
        deadline = __import__("time").time() + 20
        while True:
            with catalog_path_lock(other.engine, "/r/a.png") as theirs:
                if theirs:
                    break
            assert __import__("time").time() < deadline, "the dead holder's lock was not dropped"
    finally:
        other.close()


def test_migrate_with_a_postgresql_catalog(catalog, tmp_path):
    """What a Ray run needs: the same tasks, the catalog on a server."""
    import json

    from click.testing import CliRunner

    from archiver.app.main import main
    from test_service_helpers import png_bytes, setup_env

    e = setup_env(tmp_path, catalog_url=catalog.url, vault_dir=str(tmp_path / "vault"))
    originals = {}
    for i in range(4):
        p = e["root"] / f"p{i}.png"
        p.write_bytes(png_bytes(i, 32))
        originals[str(p)] = p.read_bytes()
    env = {"ARCHIVER_HOME": str(e["home"]), "ARCHIVER_CONFIG": str(e["config"])}
    r = CliRunner().invoke(main, ["migrate", str(e["root"]), "--json", "--executor", "thread", "--workers", "2"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["by_outcome"] == {"committed": 4}
    from archiver.catalog.models import FileVersion
    from sqlalchemy import select

    with catalog.session() as s:
        rows = {fv.path: fv.state for fv in s.scalars(select(FileVersion))}
    assert rows == {p: "committed" for p in originals}
    for p in originals:
        assert not os.path.exists(p) and os.path.exists(p + ".jxl")
    # check_exactly_once reads the SQLite catalog; here the catalog is the server's
    assert not (e["home"] / "catalog.sqlite").exists()
