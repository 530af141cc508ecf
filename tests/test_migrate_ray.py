"""``archiver migrate --executor ray`` on a real two-node local Ray cluster with the catalog on a
throw-away PostgreSQL: a Ray worker process of the second node is killed mid-task (parked at a known
step by ``ARCHIVER_FAULT_HOLD``, so the kill happens on fast and slow machines alike) while the
head goes on committing, the same command is run again,
and every file ends up archived exactly once, no original lost, ``verify`` clean. Skipped
where Ray or PostgreSQL is missing (CI installs both)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from archiver.work.faults import HOLD_ENV
from ray_cluster import RayCluster
from test_service_helpers import check_exactly_once, committed_paths, png_bytes, setup_env

pytest.importorskip("ray")


@pytest.fixture
def cluster(tmp_path, request):
    """Two nodes whose workers park at a step (``ARCHIVER_FAULT_HOLD``, once per node): node2's
    first task at ``request.param`` (default ``written``) so that the test can kill a node2
    worker certainly mid-task however fast the machine, the head's first task right at the start
    so that the head cannot run every file before node2 has a worker (it is let go once node2's
    task is parked)."""
    step = getattr(request, "param", "written")
    holds = tmp_path / "holds"
    holds.mkdir()
    homes = {"head": tmp_path / "head-home", "node2": tmp_path / "node2-home"}
    for h in homes.values():
        h.mkdir()
    node_env = {"head": {HOLD_ENV: f"discovered:{holds / 'head'}"},
                "node2": {HOLD_ENV: f"{step}:{holds / 'node2'}"}}
    c = RayCluster(homes, node_env=node_env).start(2)
    c.holds = holds
    try:
        yield c
    finally:
        c.stop()


def _collection(root, n: int, size: int = 96) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        p = root / f"d{i % 5}" / f"img{i:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png_bytes(i, size))
        out[str(p)] = p.read_bytes()
    return out


def _migrate(e, cluster, *extra) -> subprocess.Popen:
    env = dict(cluster.env, ARCHIVER_HOME=str(e["home"]), ARCHIVER_CONFIG=str(e["config"]))
    return subprocess.Popen([sys.executable, "-m", "archiver", "migrate", str(e["root"]), "--executor", "ray",
                             "--workers", "4", "--json", *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _run_kill_rerun(tmp_path, url, cluster, n: int, kill_after: int):
    (tmp_path / "shared").mkdir()
    e = setup_env(tmp_path / "shared", catalog_url=url, vault_dir=str(tmp_path / "shared" / "vault"))
    originals = _collection(e["root"], n)
    first = _migrate(e, cluster)
    held = cluster.holds / "node2"
    try:
        deadline = time.time() + 300
        while first.poll() is None and not held.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert held.exists(), "no task reached node2 (its worker never parked at the hold step)"
        pid = int(held.read_text())  # the marker appears with its pid in it (a hard link)
        assert pid in cluster.task_processes("node2"), f"pid {pid} is not a busy Ray worker of node2"
        # the head goes on: files are committed while node2's worker is parked mid-task
        (cluster.holds / "head.release").touch()
        while (first.poll() is None and len(committed_paths(e["home"], url)) < kill_after
               and time.time() < deadline):
            time.sleep(0.05)
        assert len(committed_paths(e["home"], url)) >= kill_after, "the head did not go on working"
        assert pid in cluster.task_processes("node2"), "node2's worker left its task before the kill"
        os.kill(pid, signal.SIGKILL)  # a worker of the second node, mid-task
        out, err = first.communicate(timeout=600)
    finally:
        for name in ("head", "node2"):  # never leave a worker parked
            (cluster.holds / f"{name}.release").touch()
        if first.poll() is None:
            first.kill()
    assert first.returncode in (0, 1), err[-3000:]
    report = json.loads(out)
    assert report["files"] + report["already_archived"] <= n
    # the same command again finishes whatever the dead worker left
    again = _migrate(e, cluster)
    out2, err2 = again.communicate(timeout=600)
    assert again.returncode == 0, err2[-3000:]
    counts = check_exactly_once(e["home"], originals, require_all=True, url=url)
    assert counts["archived"] == n
    assert not [p for p in originals if os.path.exists(p)]
    # both nodes really worked (each keeps its per-host file locks in its own state dir)
    for name, home in cluster.homes.items():
        assert (home / "locks").is_dir(), f"{name} ran no task"
    env = dict(e["env"], ARCHIVER_HOME=str(e["home"]))
    v = subprocess.run([sys.executable, "-m", "archiver", "verify", "--json"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert v.returncode == 0, v.stdout[-2000:] + v.stderr[-2000:]
    return report, json.loads(out2)


def test_migrate_on_a_two_node_ray_cluster_survives_a_killed_worker(tmp_path, fresh_pg_url, cluster):
    _run_kill_rerun(tmp_path, fresh_pg_url, cluster, n=40, kill_after=8)


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["committed"], indirect=True)  # killed between commit and removal
def test_migrate_200_images_on_ray_with_a_killed_worker(tmp_path, fresh_pg_url, cluster):
    _run_kill_rerun(tmp_path, fresh_pg_url, cluster, n=200, kill_after=60)
