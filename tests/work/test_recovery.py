"""Fault injection: kill -9 at every step boundary, disk full (files and catalog), EXDEV,
read-only directories, a source changed during encoding. After each: nothing is lost, and a
rerun brings the catalog and the disk into agreement."""

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from archiver.work import faults as faults_mod
from archiver.work import FAULT_STEPS, archive_file
from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED, FAILED, FileVersion
from archiver.work.restore import produce, restore
from archiver.testing.catalog import disk_problems, make_context, write_jpeg
from archiver.work.verify import verify
from archiver.codecs.lossless import format as lossless
from archiver.storage import atomic

RUNNER = """
import sys
from archiver.work import archive_file
from archiver.testing.catalog import make_context
ctx = make_context(sys.argv[1])
print(archive_file(sys.argv[2], ctx).state)
"""


def sha(b):
    return hashlib.sha256(b).hexdigest()


def nothing_lost(ctx, src: Path, orig: bytes, diffusion: bool) -> None:
    """The original is there, or a committed and verified replacement (or vault copy) is."""
    if src.exists():
        assert src.read_bytes() == orig
        return
    with ctx.catalog.session() as s:
        rows = [r for r in q.versions(s, str(src)) if r.state == COMMITTED]
    assert rows, "original gone without a committed catalog row"
    data, source, exact = produce(rows[-1], ctx.vault, ctx.codecs)
    if diffusion and source == "reconstruction":
        assert exact == "approx" and data
    else:
        assert data == orig


CASES = [("plain", s) for s in FAULT_STEPS if s != "vaulted"] + \
        [("vault", s) for s in ("vaulted", "committed", "removed")] + \
        [("tex", s) for s in ("written", "verified")]  # the rest: test_fault_property


@pytest.mark.parametrize("kind,step", CASES, ids=[f"{k}-{s}" for k, s in CASES])
def test_kill9_at_every_step(tmp_path, kind, step):
    state = tmp_path / "state"
    src = write_jpeg(tmp_path / "c" / kind / "a.jpg", seed=3)
    orig = src.read_bytes()
    env = dict(os.environ, ARCHIVER_FAULT=step)
    r = subprocess.run([sys.executable, "-c", RUNNER, str(state), str(src)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -9, f"the fault at {step!r} did not fire: {r.stdout} {r.stderr[-2000:]}"
    ctx = make_context(state)
    try:
        nothing_lost(ctx, src, orig, kind == "tex")  # right after the crash, before any recovery
        o = archive_file(src, ctx)  # restart: recovers and finishes
        assert o.state in (COMMITTED, "unchanged"), o
        assert disk_problems(ctx, tmp_path / "c") == []
        nothing_lost(ctx, src, orig, kind == "tex")
        rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
        assert rep.mismatches == [] and rep.ok == rep.total >= 1
        if kind != "tex":
            out = tmp_path / "restored"
            res = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs, to=out)
            assert res[0].status in ("restored", "present") and (out / "a.jpg").read_bytes() == orig
        with ctx.catalog.session() as s:
            assert len([x for x in q.versions(s, str(src))]) == 1  # recovered in place, no duplicate versions
    finally:
        ctx.catalog.close()


@pytest.mark.parametrize("step", ["written", "committed"])
def test_recovery_routine_alone(tmp_path, step):
    """After a crash, the start-up recovery (no rerun of the file) already makes disk and
    catalog agree: the unfinished attempt is rolled back, or the committed one finished."""
    from archiver.work import recover_pending

    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = src.read_bytes()
    r = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "state"), str(src)],
                       env=dict(os.environ, ARCHIVER_FAULT=step), capture_output=True, timeout=300)
    assert r.returncode == -9
    ctx = make_context(tmp_path / "state")
    done = recover_pending(ctx)
    assert [p for p, _ in done] == [str(src)]
    assert disk_problems(ctx, tmp_path / "c") == []
    assert recover_pending(ctx) == []  # nothing left to do
    if step == "written":
        assert src.read_bytes() == orig and sorted(p.name for p in src.parent.iterdir()) == ["a.jpg"]
    else:
        assert not src.exists()
    nothing_lost(ctx, src, orig, False)
    ctx.catalog.close()


def test_kill9_through_the_cli(tmp_path):
    """The real command line, with a config file, killed after the catalog commit."""
    from archiver.testing.catalog import make_policy

    (tmp_path / "cfg.yaml").write_text(f"catalog_url: sqlite:///{tmp_path / 'cat.sqlite'}\nvault_dir: {tmp_path / 'vault'}\n")
    make_policy(tmp_path / "policy.yaml")
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = src.read_bytes()
    cmd = [sys.executable, "-m", "archiver", "archive", str(tmp_path / "c"), "--config", str(tmp_path / "cfg.yaml"),
           "--policy", str(tmp_path / "policy.yaml"), "--json"]
    home = dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home"))
    r = subprocess.run(cmd, env=dict(home, ARCHIVER_FAULT="committed"), capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    assert src.read_bytes() == orig  # committed, but the original not yet removed
    r = subprocess.run(cmd, env=home, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not src.exists() and lossless.restore(Path(str(src) + ".jxl").read_bytes()) == orig
    r = subprocess.run([sys.executable, "-m", "archiver", "verify", "--config", str(tmp_path / "cfg.yaml")],
                       env=home, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


# -- disk full ---------------------------------------------------------------------------------
class DiskFull:
    """Count writes (the compressed file's os.write calls and atomic writes, e.g. the vault's)
    and fail the Nth with ENOSPC."""

    def __init__(self, monkeypatch, n):
        self.n, self.count = n, 0
        real_os_write, real_atomic = os.write, atomic.write_bytes

        def os_write(fd, data):
            self._tick()
            return real_os_write(fd, data)

        def atomic_write(*a, **kw):
            self._tick()
            return real_atomic(*a, **kw)

        monkeypatch.setattr(os, "write", os_write)
        monkeypatch.setattr(atomic, "write_bytes", atomic_write)

    def _tick(self):
        self.count += 1
        if self.count == self.n:
            raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_enospc_on_nth_write(tmp_path, monkeypatch, n):
    src = write_jpeg(tmp_path / "c" / "vault" / "a.jpg")
    orig = src.read_bytes()
    ctx = make_context(tmp_path / "state")
    with monkeypatch.context() as m:
        full = DiskFull(m, n)
        o = archive_file(src, ctx)
    # three writes: the compressed file, the vault object, the vault metadata; the 4th never comes
    if n <= 3:
        assert o.state == FAILED and "No space left" in o.error
        assert src.read_bytes() == orig
        assert disk_problems(ctx, tmp_path / "c") == []
        o = archive_file(src, ctx)  # space is back
    else:
        assert full.count == 3
    assert o.state == COMMITTED and not src.exists()
    assert disk_problems(ctx, tmp_path / "c") == []
    assert restore(ctx.catalog, [str(src)], vault=ctx.vault)[0].status == "restored" and src.read_bytes() == orig
    ctx.catalog.close()


@pytest.mark.parametrize("n", range(1, 12))
def test_catalog_disk_full_on_nth_commit(tmp_path, monkeypatch, n):
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = src.read_bytes()
    ctx = make_context(tmp_path / "state")
    count = {"n": 0}
    real_commit = Session.commit

    def commit(self):
        count["n"] += 1
        if count["n"] == n:
            raise OperationalError("COMMIT", {}, Exception("database or disk is full"))
        return real_commit(self)

    with monkeypatch.context() as m:
        m.setattr(Session, "commit", commit)
        try:
            archive_file(src, ctx)
        except OperationalError:
            pass
    nothing_lost(ctx, src, orig, False)
    o = archive_file(src, ctx)
    assert o.state in (COMMITTED, "unchanged")
    assert disk_problems(ctx, tmp_path / "c") == []
    nothing_lost(ctx, src, orig, False)
    ctx.catalog.close()


# -- other filesystems and permissions --------------------------------------------------------
def test_exdev_vault_on_another_filesystem(tmp_path, monkeypatch):
    real_replace = os.replace

    def replace(a, b, *args, **kw):
        if os.path.dirname(os.path.abspath(a)) != os.path.dirname(os.path.abspath(b)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(a, b, *args, **kw)

    def rename(*a, **kw):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    src = write_jpeg(tmp_path / "c" / "vault" / "a.jpg")
    orig = src.read_bytes()
    ctx = make_context(tmp_path / "state")
    o = archive_file(src, ctx)
    assert o.state == COMMITTED and o.original_status == "removed"
    with ctx.catalog.session() as s:
        r = q.latest_version(s, str(src))
    assert Path(r.vault_path).read_bytes() == orig
    ctx.catalog.close()


def _deny_writes_in(monkeypatch, directory: Path):
    """A read-only directory (simulated for root, whom chmod does not stop)."""
    real_open, real_link = os.open, os.link

    def ro_open(path, flags, *a, **kw):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and Path(path).parent == directory:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", ro_open)


def test_read_only_directory(tmp_path, monkeypatch):
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = src.read_bytes()
    ctx = make_context(tmp_path / "state")
    os.chmod(src.parent, 0o555)
    try:
        with monkeypatch.context() as m:
            if os.geteuid() == 0:
                _deny_writes_in(m, src.parent)
            o = archive_file(src, ctx)
        assert o.state == FAILED and "Permission denied" in o.error
        assert src.read_bytes() == orig and sorted(p.name for p in src.parent.iterdir()) == ["a.jpg"]
    finally:
        os.chmod(src.parent, 0o755)
    assert archive_file(src, ctx).state == COMMITTED
    ctx.catalog.close()


def test_original_cannot_be_removed(tmp_path, monkeypatch):
    """Compressed file written and committed, but taking the original out of its name fails
    (read-only source): both stay, the catalog says so, and a later run finishes the job."""
    from archiver.storage import atomic

    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = src.read_bytes()
    ctx = make_context(tmp_path / "state")
    real_rename = atomic.rename_noreplace

    def rename_noreplace(a, b):
        if Path(a) == src:
            raise PermissionError(errno.EACCES, "Permission denied", str(a))
        return real_rename(a, b)

    with monkeypatch.context() as m:
        m.setattr(atomic, "rename_noreplace", rename_noreplace)
        o = archive_file(src, ctx)
    assert o.state == COMMITTED and o.original_status == "present" and src.read_bytes() == orig
    assert verify(ctx.catalog, vault=ctx.vault).mismatches == []
    o = archive_file(src, ctx)
    assert o.recovered and not src.exists()
    assert disk_problems(ctx, tmp_path / "c") == []
    ctx.catalog.close()


def test_source_replaced_between_commit_and_removal(tmp_path):
    """Crash after commit; before the restart someone writes a new photo at the same path:
    it is not removed (it is not what was archived) but archived as a new version."""
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg", seed=1)
    state = tmp_path / "state"
    r = subprocess.run([sys.executable, "-c", RUNNER, str(state), str(src)],
                       env=dict(os.environ, ARCHIVER_FAULT="committed"), capture_output=True, timeout=300)
    assert r.returncode == -9
    write_jpeg(src, seed=9)
    new = src.read_bytes()
    ctx = make_context(state)
    o = archive_file(src, ctx)
    assert o.state == COMMITTED and "changed" in (o.recovered or "")
    with ctx.catalog.session() as s:
        vs = q.versions(s, str(src))
    assert len(vs) == 2 and lossless.restore(Path(vs[1].compressed_path).read_bytes()) == new
    assert lossless.restore(Path(vs[0].compressed_path).read_bytes()) != new
    ctx.catalog.close()


def test_two_processes_on_the_same_file(tmp_path):
    """Two archive runs started together on one file: one archives it, the other finds it done."""
    src = write_jpeg(tmp_path / "c" / "vault" / "a.jpg")
    orig = src.read_bytes()
    state = tmp_path / "state"
    make_context(state).catalog.close()  # create the catalog first
    procs = [subprocess.Popen([sys.executable, "-c", RUNNER, str(state), str(src)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = sorted(p.communicate(timeout=300)[0].strip() for p in procs)
    assert outs == ["committed", "unchanged"]
    ctx = make_context(state)
    assert disk_problems(ctx, tmp_path / "c") == []
    nothing_lost(ctx, src, orig, False)
    with ctx.catalog.session() as s:
        assert len(q.versions(s, str(src))) == 1
    ctx.catalog.close()


def test_recover_pending_waits_for_a_busy_worker(tmp_path):
    """Start-up recovery must not roll back a file another worker on this host is working on."""
    import threading
    import time

    from archiver.work import path_lock, recover_pending
    from archiver.catalog.models import DISCOVERED, SKIPPED

    ctx = make_context(tmp_path / "state")
    src = str(write_jpeg(tmp_path / "c" / "plain" / "a.jpg"))
    started = threading.Event()

    def worker():
        with path_lock(ctx.lock_dir, src):
            with ctx.catalog.session() as s:
                q.transition(s, FileVersion(path=src), DISCOVERED)
            started.set()
            time.sleep(1.0)
            with ctx.catalog.session() as s:
                q.transition(s, q.latest_version(s, src), SKIPPED, error="finished by the worker")

    t = threading.Thread(target=worker)
    t.start()
    started.wait(30)
    done = recover_pending(ctx)
    t.join(30)
    assert done == []
    with ctx.catalog.session() as s:
        assert [e.kind for e in q.events_for(s, q.latest_version(s, src))] == ["discovered", "skipped"]
    ctx.catalog.close()
