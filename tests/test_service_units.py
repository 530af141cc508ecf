"""Service building blocks: settle window, candidate filter, root guard, instance lock, logs, sd_notify."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from archiver.errors import CatalogError
from archiver.service.lock import InstanceLock, lock_path_for
from archiver.service.logs import setup_logging
from archiver.service.notify import sd_notify
from archiver.service.roots import MARKER, RootGuard
from archiver.service.settle import SettleTracker
from archiver.service.watcher import Watcher, is_candidate, walk


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _old(path, age=3600):
    t = time.time() - age
    os.utime(path, (t, t))


def test_settle_waits_for_a_stable_signature(tmp_path):
    clock = Clock()
    st = SettleTracker(5, clock=clock)
    f = tmp_path / "a.png"
    f.write_bytes(b"x" * 10)
    _old(f)
    st.touch(str(f))
    assert st.ready() == []  # first sight only records the signature
    clock.t += 4
    assert st.ready() == []
    clock.t += 1.5
    assert st.ready() == [str(f)]
    assert len(st) == 0


def test_settle_never_releases_a_file_that_keeps_growing(tmp_path):
    clock = Clock()
    st = SettleTracker(5, clock=clock)
    f = tmp_path / "a.png"
    f.write_bytes(b"")
    st.touch(str(f))
    for i in range(50):  # a very slow writer: no timeout ever hands it on
        with open(f, "ab") as fh:
            fh.write(b"x")
        _old(f, 3600 - i)
        clock.t += 3
        assert st.ready() == []
    # once it stops changing it settles (within two windows: a change is noticed when one is due)
    clock.t += 6
    got = st.ready()
    clock.t += 6
    got += st.ready()
    assert got == [str(f)]


def test_settle_requires_an_old_enough_mtime(tmp_path):
    clock = Clock()
    st = SettleTracker(5, clock=clock)
    f = tmp_path / "a.png"
    f.write_bytes(b"x")  # mtime = now (wall clock)
    st.touch(str(f))
    st.ready()
    clock.t += 100  # our clock moved, but the file was written < 5 s ago by the wall clock
    assert st.ready() == []


def test_settle_drops_vanished_files(tmp_path):
    st = SettleTracker(0)
    f = tmp_path / "a.png"
    f.write_bytes(b"x")
    st.touch(str(f))
    f.unlink()
    assert st.ready() == [] and len(st) == 0


def test_candidates():
    assert is_candidate("/x/a.JPG") and is_candidate("/x/b.png") and is_candidate("/x/c.tiff")
    for p in ("/x/.archiver-tmp-abc.part", "/x/a.dlc", "/x/a.jxl", "/x/a.axl", "/x/.hidden.png", "/x/notes.txt",
              "/x/a.png.part", "/x/a.png~", "/x/a.png.crdownload"):
        assert not is_candidate(p), p


def test_walk_skips_hidden_dirs_and_outputs(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / ".snap").mkdir()
    for p in ("a.png", "d/b.jpg", ".snap/c.png", "d/b.dlc", "d/.archiver-tmp-1.part"):
        (tmp_path / p).write_bytes(b"x")
    assert sorted(os.path.relpath(p, tmp_path) for p in walk(tmp_path)) == ["a.png", "d/b.jpg"]


@pytest.mark.parametrize("polling", [False, True])
def test_watcher_sees_creates_and_moves_into_place(tmp_path, polling):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "staging"
    outside.mkdir()
    seen: set[str] = set()
    w = Watcher(seen.add, poll_interval=0.1)
    w.start()
    try:
        assert w.add(str(root), polling=polling)
        (root / "new.png").write_bytes(b"x")
        (root / "ignored.dlc").write_bytes(b"x")
        (outside / "moved.jpg").write_bytes(b"x")
        os.rename(outside / "moved.jpg", root / "moved.jpg")
        (root / ".archiver-tmp-x.part").write_bytes(b"x")
        os.rename(root / ".archiver-tmp-x.part", root / "renamed.png")
        (outside / "sub").mkdir()
        (outside / "sub" / "deep.png").write_bytes(b"x")
        os.rename(outside / "sub", root / "sub")
        want = {str(root / n) for n in ("new.png", "moved.jpg", "renamed.png", "sub/deep.png")}
        deadline = time.time() + 5
        while time.time() < deadline and not want <= seen:
            time.sleep(0.05)
    finally:
        w.stop()
    assert want <= seen
    assert not any(p.endswith((".dlc", ".part")) for p in seen)


def test_root_guard_pauses_missing_and_changed_device(tmp_path):
    state = tmp_path / "state" / "roots.json"
    root = tmp_path / "root"
    root.mkdir()
    g = RootGuard(state)
    assert g.check(str(root)) and not state.exists()  # empty: maybe a mount point not mounted yet
    (root / "a.png").write_bytes(b"x")
    assert g.check(str(root)) and str(root) in json.loads(state.read_text())
    rec = json.loads(state.read_text())
    # pretend it was recorded on another device: an unmounted mount point looks exactly like this
    rec[str(root)]["st_dev"] += 1
    state.write_text(json.dumps(rec))
    g2 = RootGuard(state)
    assert not g2.check(str(root)) and "device" in g2.paused()[str(root)]
    assert RootGuard(state, rebind=True).check(str(root))
    missing = tmp_path / "gone"
    assert not g.check(str(missing)) and g.is_paused(str(missing))
    missing.mkdir()
    assert g.check(str(missing)) and not g.is_paused(str(missing))


def test_root_guard_marker(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / MARKER).write_text("")
    g = RootGuard(tmp_path / "roots.json")
    assert g.check(str(root))
    (root / MARKER).unlink()
    assert not g.check(str(root))
    (root / MARKER).write_text("")
    assert g.check(str(root))


def test_instance_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    lp = lock_path_for(f"sqlite:///{tmp_path / 'c.sqlite'}", tmp_path)
    assert lp.name == "c.sqlite.daemon.lock"
    code = (f"from archiver.service.lock import InstanceLock; import time, sys; "
            f"InstanceLock({str(lp)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(CatalogError, match=f"pid {p.pid}"):
            InstanceLock(lp).acquire()
    finally:
        p.kill()  # kill -9: the kernel drops the lock
        p.wait()
    with InstanceLock(lp):
        pass


def test_json_logs_carry_extra_fields():
    buf = io.StringIO()
    setup_logging(True, stream=buf)
    logging.getLogger("archiver.service.test").info("archived", extra={"path": "/x/a.png", "bytes_saved": 12})
    doc = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert doc["msg"] == "archived" and doc["path"] == "/x/a.png" and doc["bytes_saved"] == 12
    assert doc["level"] == "info" and doc["ts"].endswith("Z")


def test_sd_notify_sends_datagrams(tmp_path, monkeypatch):
    addr = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(addr)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", addr)
        assert sd_notify("READY=1")
        assert s.recv(100) == b"READY=1"
        monkeypatch.delenv("NOTIFY_SOCKET")
        assert not sd_notify("READY=1")
    finally:
        s.close()


def test_a_file_held_open_for_writing_never_settles(tmp_path):
    from archiver.service.settle import open_for_writing

    clock = Clock()
    st = SettleTracker(1, clock=clock)
    f = tmp_path / "a.png"
    code = f"import time; f = open({str(f)!r}, 'ab'); f.write(b'x'); f.flush(); print('open', flush=True); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "open"
        _old(f)
        assert open_for_writing([str(f)]) == {str(f)}
        st.touch(str(f))
        for _ in range(5):  # a writer paused far longer than the window, file still open
            st.ready()
            clock.t += 10
        assert st.ready() == []
    finally:
        p.kill()
        p.wait()
    clock.t += 10
    assert st.ready() == [str(f)]
    assert open_for_writing([str(f)]) == set()
    with open(f, "rb"):  # readers do not hold a file back
        assert open_for_writing([str(f)]) == set()


def _torch_threads():
    """What torch will use when the encode first imports it (it reads OMP_NUM_THREADS then);
    importing torch here would only make the test slow."""
    import signal as sig

    return int(os.environ["OMP_NUM_THREADS"]), sig.getsignal(sig.SIGTERM) == sig.SIG_IGN


def test_worker_processes_split_the_cores_and_ignore_sigterm():
    """N workers x torch threads = cores (no oversubscription); workers leave stopping to the parent."""
    from archiver.service.workers import make_executor, torch_threads_for

    ex = make_executor("process", 2)
    try:
        threads, ignores_term = ex.submit(_torch_threads).result(timeout=120)
    finally:
        ex.shutdown()
    assert threads == torch_threads_for(2) == max(1, (os.cpu_count() or 1) // 2)
    assert ignores_term
