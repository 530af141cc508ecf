"""Two daemons as two "hosts" (own state directory, own node name) sharing one PostgreSQL
catalog and watching the same root: a burst is handled exactly once between them, and when one
is killed mid-burst the other takes over its claims once their lease runs out. Real daemons as
subprocesses on a throw-away PostgreSQL cluster (skipped where PostgreSQL is missing)."""

from __future__ import annotations

import os

from test_daemon_e2e import _drop
from test_service_helpers import Daemon, check_exactly_once, committed_paths, queue_rows, setup_env, wait_until, write_config

LEASE = 5.0


def _node(tmp_path, name: str, url: str, root, vault) -> dict:
    """One "host": its own state dir and config (same catalog, root and vault, own node name)."""
    (tmp_path / name).mkdir()
    e = setup_env(tmp_path / name, roots=[root], catalog_url=url, node_name=name, workers=2,
                  lease_seconds=LEASE, vault_dir=str(vault))
    return e


def test_two_daemons_share_a_catalog_and_take_over_a_dead_ones_claims(tmp_path, fresh_pg_url):
    root = tmp_path / "shared" / "photos"
    root.mkdir(parents=True)
    vault = tmp_path / "shared" / "vault"
    a = _node(tmp_path, "node-a", fresh_pg_url, root, vault)
    b = _node(tmp_path, "node-b", fresh_pg_url, root, vault)
    da = Daemon(a).ready()
    db = Daemon(b).ready()
    try:
        originals = _drop(root, [f"burst/f{i:03d}.png" for i in range(60)], size=128)
        # both work on the burst; kill node-a while it holds claims
        wait_until(lambda: len([x for x in da.logs() if x.get("msg") == "handled"]) >= 5
                   and len([x for x in db.logs() if x.get("msg") == "handled"]) >= 5, 120, what="both daemons working")
        held = []

        def kill_when_holding():
            rows = queue_rows(a["home"], fresh_pg_url)
            if any(q["state"] == "claimed" and (q["claimed_by"] or "").startswith("node-a:") for q in rows):
                da.kill()
                held.extend(q["path"] for q in queue_rows(a["home"], fresh_pg_url)
                            if q["state"] == "claimed" and (q["claimed_by"] or "").startswith("node-a:"))
                return True
            return False

        wait_until(kill_when_holding, 60, interval=0.01, what="node-a to hold a claim")
        assert held, "node-a died without a claim in hand: nothing to take over"
        assert len(committed_paths(a["home"], fresh_pg_url)) < len(originals), "killed too late"
        # done means every queue row done, not only every file committed: node-a may have committed
        # a file it still held a claim on when it died, and only node-b's takeover (after the
        # lease) closes that claim
        def burst_done():
            rows = queue_rows(b["home"], fresh_pg_url)
            return (len(committed_paths(b["home"], fresh_pg_url)) >= len(originals)
                    and len(rows) == len(originals) and all(q["state"] == "done" for q in rows))

        wait_until(burst_done, 180, interval=0.2, what="node-b to finish the burst, node-a's claims included")
        takeover = [x for x in db.logs() if x.get("msg") == "took over stale claims"]
        assert takeover and sum(x["count"] for x in takeover) >= len(held)
    finally:
        if da.proc.poll() is None:
            da.kill()
        assert db.stop() == 0
    counts = check_exactly_once(a["home"], originals, require_all=True, url=fresh_pg_url)
    assert counts["archived"] == len(originals)
    rows = queue_rows(b["home"], fresh_pg_url)
    assert all(q["state"] == "done" for q in rows) and len(rows) == len(originals)
    # each file archived by one node only (the other may at most find it done: "unchanged")
    committed_a = {x["path"] for x in da.logs() if x.get("msg") == "handled" and x.get("status") == "committed"}
    committed_b = {x["path"] for x in db.logs() if x.get("msg") == "handled" and x.get("status") == "committed"}
    assert committed_a and committed_b and not (committed_a & committed_b), "a file was archived by both nodes"
    assert committed_a | committed_b | set(held) >= set(originals)
    assert not [p for p in originals if os.path.exists(p)]


def test_a_second_daemon_with_the_same_node_name_is_refused(tmp_path, fresh_pg_url):
    import subprocess
    import sys

    root = tmp_path / "root"
    root.mkdir()
    a = _node(tmp_path, "node-a", fresh_pg_url, root, tmp_path / "vault")
    twin = _node(tmp_path, "twin", fresh_pg_url, root, tmp_path / "vault")
    write_config(twin["config"], **dict(twin["settings"], node_name="node-a"))  # another host, same name
    d = Daemon(a).ready()
    try:
        r = subprocess.run([sys.executable, "-m", "archiver", "daemon", "--config", str(twin["config"])],
                           env=twin["env"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 12 and "node name 'node-a' already serves this catalog" in r.stderr
    finally:
        assert d.stop() == 0
