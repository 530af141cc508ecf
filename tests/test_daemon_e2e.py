"""The real daemon as a subprocess on temporary roots: nothing is encoded before it is complete,
nothing is archived twice, nothing is lost — across renames, bursts, SIGTERM and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from test_service_helpers import (Daemon, catalog_rows, check_exactly_once, committed_paths, free_port, png_bytes,
                                  queue_rows, setup_env, wait_until, write_config)


def _drop(root, names, seed0=0, size=24):
    out = {}
    for i, n in enumerate(names):
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        data = png_bytes(seed0 + i, size)
        p.write_bytes(data)
        out[str(p)] = data
    return out


def test_slow_writer_is_never_encoded_before_it_is_complete_and_a_second_daemon_is_refused(tmp_path):
    e = setup_env(tmp_path, settle_seconds=1.0)
    d = Daemon(e).ready()
    try:
        # one daemon per catalog: a second one is refused with a clear error
        r = subprocess.run([sys.executable, "-m", "archiver", "daemon", "--config", str(e["config"])],
                           env=e["env"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 12  # LockedError
        assert "another archiver daemon already serves this catalog" in r.stderr
        assert f"pid {d.proc.pid}" in r.stderr
        data = png_bytes(7, 64)
        target = e["root"] / "slow.png"
        chunks = [data[i:i + len(data) // 12 + 1] for i in range(0, len(data), len(data) // 12 + 1)]
        with open(target, "wb") as f:
            for c in chunks:  # ~3 s of writing, pauses well inside the settle window
                f.write(c)
                f.flush()
                time.sleep(0.25)
                assert not [r for r in catalog_rows(e["home"]) if r["path"] == str(target)], "touched while written"
                assert not any(q["path"] == str(target) for q in queue_rows(e["home"]))
        wait_until(lambda: str(target) in committed_paths(e["home"]), 30, what="slow file archived")
    finally:
        assert d.stop() == 0
    check_exactly_once(e["home"], {str(target): data}, require_all=True)


def test_renames_into_place_burst_and_metrics(tmp_path):
    port = free_port()
    e = setup_env(tmp_path, metrics_port=port, workers=2)
    staging = tmp_path / "staging"
    staging.mkdir()
    d = Daemon(e).ready()
    try:
        originals = _drop(e["root"], [f"burst/b{i:03d}.png" for i in range(60)])
        # downloader style: a temp name in the root, then a rename to the real name
        for i in range(10):
            data = png_bytes(1000 + i)
            tmp = e["root"] / f".archiver-tmp-{i}.part"
            tmp.write_bytes(data)
            os.rename(tmp, e["root"] / f"renamed{i}.png")
            originals[str(e["root"] / f"renamed{i}.png")] = data
        # moved in from another directory of the same filesystem (files and a whole directory)
        staged = _drop(staging, [f"m{i}.png" for i in range(5)] + [f"dir/n{i}.png" for i in range(5)], seed0=2000)
        for p, data in staged.items():
            rel = os.path.relpath(p, staging)
            if not rel.startswith("dir"):
                os.rename(p, e["root"] / rel)
                originals[str(e["root"] / rel)] = data
        os.rename(staging / "dir", e["root"] / "dir")
        originals.update({str(e["root"] / os.path.relpath(p, staging)): data
                          for p, data in staged.items() if os.path.relpath(p, staging).startswith("dir")})
        (e["root"] / "keep").mkdir()
        keep = _drop(e["root"], ["keep/k.png"], seed0=3000)
        originals.update(keep)
        wait_until(lambda: len(committed_paths(e["home"])) >= len(originals), 120, what="all archived")

        def scrape():
            t = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            want = ('archiver_files_total{action="lossless",outcome="committed"} 80.0',
                    'archiver_files_total{action="keep",outcome="committed"} 1.0')
            return t if all(w in t for w in want) else None  # the two counters move independently

        text = wait_until(scrape, 20, interval=0.3, what="metrics to count every file")
    finally:
        assert d.stop() == 0
    counts = check_exactly_once(e["home"], originals, require_all=True)
    assert counts["archived"] == 81
    assert 'archiver_files_total{action="keep",outcome="committed"} 1.0' in text
    assert "archiver_bytes_saved_total" in text and "archiver_queue_depth" in text
    assert "archiver_encode_seconds_bucket" in text
    assert all(q["state"] == "done" for q in queue_rows(e["home"]))
    handled = [x for x in d.logs() if x.get("msg") == "handled"]
    assert len(handled) == 81 and all("path" in x and "status" in x for x in handled)


@pytest.mark.slow
def test_burst_of_hundreds(tmp_path):
    e = setup_env(tmp_path, workers=2)
    d = Daemon(e, executor="process").ready()
    try:
        originals = _drop(e["root"], [f"d{i % 7}/f{i:04d}.png" for i in range(300)])
        wait_until(lambda: len(committed_paths(e["home"])) >= 300, 600, interval=0.5, what="300 archived")
    finally:
        assert d.stop() == 0
    assert check_exactly_once(e["home"], originals, require_all=True)["archived"] == 300


def test_sigterm_finishes_the_file_in_hand_then_restart_completes(tmp_path):
    e = setup_env(tmp_path, workers=1)
    d = Daemon(e, executor="process").ready()
    originals = _drop(e["root"], [f"t{i:02d}.png" for i in range(12)], size=160)
    try:
        d.wait_log("handled", 120)
    finally:
        rc = d.stop(120)
    assert rc == 0
    logs = d.logs()
    [stopping] = [i for i, x in enumerate(logs) if x.get("msg") == "stopping: finishing files in hand"]
    in_hand = logs[stopping]["in_flight"]
    # the file(s) in hand at SIGTERM were finished, not cut off
    assert len([x for x in logs[stopping:] if x.get("msg") == "handled"]) == in_hand
    assert logs[-1]["msg"] == "stopped"
    first = check_exactly_once(e["home"], originals)
    assert first["untouched"] > 0, "stopped too late to test anything"
    assert not [q for q in queue_rows(e["home"]) if q["state"] == "claimed"]
    d2 = Daemon(e, executor="process").ready()
    try:
        wait_until(lambda: len(committed_paths(e["home"])) >= len(originals), 180, what="rest archived")
    finally:
        assert d2.stop() == 0
    check_exactly_once(e["home"], originals, require_all=True)


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(x) for x in out.split()]


def test_kill_9_and_restart_loses_nothing_and_does_nothing_twice(tmp_path):
    e = setup_env(tmp_path, workers=2)
    d = Daemon(e, executor="process").ready()
    originals = _drop(e["root"], [f"k{i:02d}.png" for i in range(12)], size=160)
    d.wait_log("handled", 120)
    kids = _children(d.proc.pid)
    d.kill()
    # the workers die with the daemon (no orphan keeps encoding a file the restart hands out again)
    wait_until(lambda: not any(os.path.exists(f"/proc/{k}") and _alive(k) for k in kids), 10, what="workers gone")
    more = _drop(e["root"], ["while-down.png"], seed0=500)  # created while no daemon runs
    originals.update(more)
    d2 = Daemon(e, executor="process").ready()
    try:
        wait_until(lambda: len(committed_paths(e["home"])) >= len(originals), 180, what="all archived after restart")
    finally:
        assert d2.stop() == 0
    check_exactly_once(e["home"], originals, require_all=True)
    assert all(q["state"] == "done" for q in queue_rows(e["home"]))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("step", ["during_write", "committed"])
def test_daemon_killed_inside_the_unit_of_work_recovers(tmp_path, step):
    """With in-process workers the unit of work's fault hook SIGKILLs the daemon itself at an
    exact step; the restart must finish or roll back that file, never duplicate or lose it."""
    e = setup_env(tmp_path)
    originals = _drop(e["root"], ["a.png", "b.png", "c.png"])
    d = Daemon(e, executor="thread", extra_env={"ARCHIVER_FAULT": step})
    assert d.proc.wait(60) == -signal.SIGKILL
    d._log.close()
    assert [q for q in queue_rows(e["home"]) if q["state"] == "claimed"]  # the crash left a claim
    d2 = Daemon(e).ready()
    try:
        started = d2.wait_log("daemon started")[0]
        assert started["requeued_stale"] == 1
        wait_until(lambda: len(committed_paths(e["home"])) >= 3, 60, what="all archived after the crash")
    finally:
        assert d2.stop() == 0
    check_exactly_once(e["home"], originals, require_all=True)


def test_missing_or_unmounted_root_pauses_and_never_deletes(tmp_path):
    e = setup_env(tmp_path)
    root = e["root"]
    (root / ".archiver-root").write_text("")  # the marker an operator puts on the mounted filesystem
    originals = _drop(root, ["before.png"])
    d = Daemon(e).ready()
    try:
        # committed *and* disposed of (the original's removal is the transaction after the commit)
        wait_until(lambda: [r["original_status"] for r in catalog_rows(e["home"])] == ["removed"], 30,
                   what="first file archived")
        rows_before = catalog_rows(e["home"])
        # "unmount": the filesystem goes away, an empty mount point directory stays behind
        away = tmp_path / "away"
        os.rename(root, away)
        root.mkdir()
        d.wait_log("root paused", 20)
        (root / "on-the-mount-point.png").write_bytes(png_bytes(99))
        d.signal(signal.SIGHUP)  # a reload (which rescans) must not resume it either
        d.wait_log("config reloaded", 20)
        time.sleep(1.5)
        assert catalog_rows(e["home"]) == rows_before  # nothing marked deleted, nothing new
        assert (root / "on-the-mount-point.png").exists()
        # "remount"
        (root / "on-the-mount-point.png").unlink()
        root.rmdir()
        os.rename(away, root)
        originals.update(_drop(root, ["after.png"], seed0=50))
        d.wait_log("root available again, resuming", 20)
        wait_until(lambda: len(committed_paths(e["home"])) == 2, 30, what="archiving resumed")
    finally:
        assert d.stop() == 0
    check_exactly_once(e["home"], originals, require_all=True)
    gone = tmp_path / "gone"
    write_config(e["config"], **dict(e["settings"], roots=[str(gone)]))
    d = Daemon(e).ready()  # a root missing at start is paused, not an error
    try:
        d.wait_log("root paused")
    finally:
        assert d.stop() == 0


def test_sighup_reloads_roots_and_talks_to_systemd(tmp_path):
    import socket
    import threading

    e = setup_env(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    got: list[str] = []
    done = threading.Event()

    def listen():  # like systemd: read every datagram as it comes
        while not done.is_set():
            try:
                got.append(sock.recv(200).decode())
            except OSError:
                continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    d = Daemon(e, extra_env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}).ready()
    try:
        wait_until(lambda: "READY=1" in got, 10, what="READY=1")
        # a new network-mount root, watched by polling, and the policy file edited in place
        write_config(e["config"], **dict(e["settings"], poll_roots=[str(other)]))
        policy = e["tmp"] / "policy.yaml"
        policy.write_text(policy.read_text().replace('["**/keep/**"]', '["**/keep/**", "**/other/**"]'))
        d.signal(signal.SIGHUP)
        d.wait_log("config reloaded", 20)
        originals = _drop(other, ["x.png"])
        wait_until(lambda: str(other / "x.png") in committed_paths(e["home"]), 30, what="new root watched")
    finally:
        assert d.stop() == 0
        time.sleep(0.5)
        done.set()
        listener.join(5)
        sock.close()
    check_exactly_once(e["home"], originals, require_all=True)
    [row] = [r for r in catalog_rows(e["home"]) if r["path"] == str(other / "x.png")]
    assert row["action"] == "keep" and row["rule"] == "keepers"  # the edited policy was used
    notes = [g.split("\n")[0] for g in got]
    assert notes.index("READY=1") < notes.index("RELOADING=1") < notes.index("STOPPING=1")
    assert any(g.startswith("RELOADING=1\nMONOTONIC_USEC=") for g in got)
    assert notes.count("READY=1") == 2  # at start and after the reload
    assert any(g.startswith("STATUS=pending=") for g in got)
    assert "WATCHDOG=1" in got  # pinged every WatchdogSec/2 from the main loop


def test_a_dying_worker_is_survived_retried_then_given_up_and_migrate_finishes_it(tmp_path):
    """A worker process that dies (OOM killer, a crash in native code — here the unit of work's
    fault hook) breaks the pool: the daemon survives, restarts the pool, retries with backoff,
    marks the file failed after max_attempts, and never touches the original meanwhile."""
    e = setup_env(tmp_path, retry_seconds=0.2, max_attempts=2)
    originals = _drop(e["root"], ["poison.png"])
    d = Daemon(e, executor="process", extra_env={"ARCHIVER_FAULT": "encoded"}).ready()
    try:
        wait_until(lambda: any(q["state"] == "failed" for q in queue_rows(e["home"])), 120, what="given up")
        assert d.proc.poll() is None  # the daemon itself is fine
        assert len([x for x in d.logs() if x.get("msg") == "work failed"]) == 2
        assert any(x.get("msg") == "worker pool restarted after a worker died" for x in d.logs())
    finally:
        assert d.stop() == 0
    [row] = queue_rows(e["home"])
    assert row["attempts"] == 2 and "worker process died" in row["last_error"]
    assert (e["root"] / "poison.png").read_bytes() == originals[str(e["root"] / "poison.png")]
    # after the cause is fixed, an explicit migrate run retries failed files (the daemon's scans do not)
    r = subprocess.run([sys.executable, "-m", "archiver", "migrate", str(e["root"]), "--json", "--executor", "thread"],
                       env=e["env"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    check_exactly_once(e["home"], originals, require_all=True)
