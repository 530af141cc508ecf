"""Shared storage across nodes (``service/places.py``): the same mount path everywhere, checked
by marker ids recorded in the catalog; a node whose view differs (a missing mount, another
filesystem at the path) is refused and never takes files for deleted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from test_service_helpers import (Daemon, catalog_rows, check_exactly_once, committed_paths, png_bytes, queue_rows,
                                  setup_env, wait_until)


@pytest.fixture
def catalog(tmp_path):
    from archiver.catalog.db import Catalog

    cat = Catalog(f"sqlite:///{tmp_path / 'cat.sqlite'}", create=True)
    yield cat
    cat.close()


def test_first_node_marks_and_records_later_nodes_must_see_the_same(tmp_path, catalog):
    from archiver.service.places import Places, check_view, read_mark

    root = tmp_path / "root"
    root.mkdir()
    a, b = Places(catalog, "node-a"), Places(catalog, "node-b")
    assert a.register(str(root), "root") == (None, None)  # empty: maybe an unmounted mount point
    assert not (root / ".archiver-root").exists()
    (root / "x.png").write_bytes(png_bytes(1))
    mark, problem = a.register(str(root), "root")
    assert problem is None and mark == read_mark(root, "root") and len(mark) == 32
    assert b.register(str(root), "root") == (mark, None)
    assert check_view(str(root), mark, "root") is None
    # node-b's mount goes away: its empty mount point has no marker
    os.rename(root, tmp_path / "away")
    root.mkdir()
    m, problem = Places(catalog, "node-b").register(str(root), "root")
    assert m == mark and "not mounted here" in problem
    assert "not mounted here" in check_view(str(root), mark, "root")
    # another filesystem at the path, with a marker of its own
    (root / ".archiver-root").write_text("0" * 32)
    assert "another filesystem is mounted at this path" in Places(catalog, "node-b").register(str(root), "root")[1]
    # the vault gets a marker even when empty
    vault = tmp_path / "vault"
    vault.mkdir()
    vm, problem = a.register(str(vault), "vault")
    assert problem is None and read_mark(vault, "vault") == vm


def test_a_task_on_a_node_without_the_mount_is_refused_and_touches_nothing(tmp_path):
    from archiver.config import load_config
    from archiver.service.messages import PlaceMarks, TaskSettings
    from archiver.service.workers import run_task

    e = setup_env(tmp_path, vault_dir=str(tmp_path / "vault"))
    p = e["root"] / "a.png"
    p.write_bytes(png_bytes(3))
    config = TaskSettings.of(load_config(e["config"]), PlaceMarks({str(e["root"]): "f" * 32}, None))
    out = run_task(str(p), config, str(e["root"]))
    assert out.status == "refused" and out.retry and "not mounted here" in out.error
    (e["root"] / ".archiver-root").write_text("e" * 32 + "\n")
    out = run_task(str(p), config, str(e["root"]))
    assert out.status == "refused" and "another filesystem" in out.error
    assert p.read_bytes() == png_bytes(3) and catalog_rows(e["home"]) == []


def _migrate(e, *args):
    from archiver.app.main import main

    return CliRunner().invoke(main, ["migrate", str(e["root"]), "--json", "--executor", "thread", *args],
                              env={"ARCHIVER_HOME": str(e["home"]), "ARCHIVER_CONFIG": str(e["config"])})


def test_migrate_with_a_shared_catalog_checks_roots_and_vault(tmp_path, fresh_pg_url):
    e = setup_env(tmp_path, catalog_url=fresh_pg_url)
    p = e["root"] / "a.png"
    p.write_bytes(png_bytes(4))
    r = _migrate(e)
    assert r.exit_code == 2 and "set vault_dir" in r.output  # a per-node vault would strand originals
    from test_service_helpers import write_config

    write_config(e["config"], **dict(e["settings"], vault_dir=str(tmp_path / "vault")))
    r = _migrate(e)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["by_outcome"] == {"committed": 1}
    mark = (e["root"] / ".archiver-root").read_text().strip()
    assert (tmp_path / "vault" / ".archiver-vault").is_file()
    # this node now sees another filesystem at the root's path: refused before anything is touched
    q = e["root"] / "b.png"
    q.write_bytes(png_bytes(5))
    (e["root"] / ".archiver-root").write_text("1" * 32)
    r = _migrate(e)
    assert r.exit_code == 2 and "another filesystem is mounted at this path" in r.output
    assert q.read_bytes() == png_bytes(5)
    (e["root"] / ".archiver-root").write_text(mark)
    assert _migrate(e).exit_code == 0
    assert not q.exists()


def _can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs root and mount namespaces (unshare -m)")
def test_a_daemon_whose_mount_is_missing_pauses_the_root_and_takes_nothing_for_deleted(tmp_path, fresh_pg_url):
    """node-b runs in its own mount namespace where the shared root is an empty directory (its
    share is not mounted). It pauses the root instead of working on, or forgetting, files that
    node-a sees; node-a's claims left by a kill -9 wait for node-a, not for node-b."""
    from test_daemon_e2e import _drop
    from test_daemon_shared_catalog import LEASE, _node

    root = tmp_path / "shared" / "photos"
    root.mkdir(parents=True)
    vault = tmp_path / "shared" / "vault"
    empty = tmp_path / "empty-mount-point"
    empty.mkdir()
    a = _node(tmp_path, "node-a", fresh_pg_url, root, vault)
    b = _node(tmp_path, "node-b", fresh_pg_url, root, vault)
    originals = _drop(root, [f"first/f{i:02d}.png" for i in range(6)], size=64)
    da = Daemon(a).ready()
    wait_until(lambda: len(committed_paths(a["home"], fresh_pg_url)) >= 6, 60, what="node-a archives the first files")
    # node-b: the same config, but the share is "not mounted" in its namespace
    import shlex

    def not_mounted(argv):  # the share is "not mounted" in node-b's own mount namespace
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                f"mount --bind {shlex.quote(str(empty))} {shlex.quote(str(root))} && exec {shlex.join(argv)}"]

    db = Daemon(b, wrap=not_mounted)
    try:
        paused = db.wait_log("root paused", 60)[0]
        assert "not mounted here" in paused["reason"]
        more = _drop(root, [f"second/g{i:02d}.png" for i in range(20)], size=160, seed0=100)
        originals.update(more)

        def a_holds_claims():
            rows = queue_rows(a["home"], fresh_pg_url)
            if any(q["state"] == "claimed" for q in rows):
                da.kill()
                return True
            return False

        wait_until(a_holds_claims, 60, interval=0.01, what="node-a to hold a claim")
        rows_at_kill = {r["id"]: r for r in catalog_rows(a["home"], fresh_pg_url)}
        import time

        time.sleep(3 * LEASE)  # three leases: node-b would have taken the claims over by now
        assert not [x for x in db.logs() if x.get("msg") == "handled"], "node-b worked without seeing the files"
        for r in catalog_rows(a["home"], fresh_pg_url):  # nothing recorded as removed or gone by node-b
            old = rows_at_kill.get(r["id"])
            assert old is None or old["original_status"] == r["original_status"]
        assert all(os.path.exists(p) or p in committed_paths(a["home"], fresh_pg_url) for p in originals)
        da2 = Daemon(a).ready()  # node-a comes back and finishes everything
        try:
            wait_until(lambda: len(committed_paths(a["home"], fresh_pg_url)) >= len(originals), 120,
                       what="node-a finishes after its restart")
        finally:
            assert da2.stop() == 0
    finally:
        if da.proc.poll() is None:
            da.kill()
        assert db.stop() == 0
    check_exactly_once(a["home"], originals, require_all=True, url=fresh_pg_url)
