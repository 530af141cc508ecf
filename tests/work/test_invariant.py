"""The one invariant: an original is removed only when the artifact read back from disk gives what
the catalog promises. A crash at every step, then the artifact removed or corrupted before the
next run: the original is never lost (issue 11 #4 and the fault corpus)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED, FAILED
from archiver.catalog.testing import disk_problems, make_context, write_jpeg, write_png
from archiver.work import FAULT_STEPS, archive_file, recover_pending, verify
from archiver.work.invariant import LOST, replacement_holds, why_not_remove

RUNNER = """
import sys
from archiver.work import archive_file
from archiver.catalog.testing import make_context
ctx = make_context(sys.argv[1])
print(archive_file(sys.argv[2], ctx).state)
"""

#: the count of every trial of the corpus (reported in the issue's closing note)
TRIALS = []


class Crash(BaseException):
    """A death nothing in archive catches (open transactions roll back as on a kill)."""


def _crash_in_process(state, src, step):
    from unittest import mock

    from archiver.work import faults

    def fault(name):
        if name == step:
            raise Crash(name)

    ctx = make_context(state)
    try:
        with mock.patch.object(faults, "fault", fault):
            archive_file(src, ctx)
    except Crash:
        pass
    finally:
        ctx.catalog.close()


def _crash(state, src, step):
    r = subprocess.run([sys.executable, "-c", RUNNER, str(state), str(src)], env=dict(os.environ, ARCHIVER_FAULT=step),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr[-2000:]


def _compressed(ctx, src):
    with ctx.catalog.session() as s:
        r = q.latest_version(s, str(src))
    return Path(r.compressed_path) if r is not None and r.compressed_path else None


CASES = [(kind, step, harm) for kind in ("plain", "vault", "tex") for step in FAULT_STEPS
         for harm in ("remove", "corrupt")
         if not (kind != "vault" and step == "vaulted")]


@pytest.mark.parametrize("kind,step,harm", CASES, ids=[f"{k}-{s}-{h}" for k, s, h in CASES])
def test_crash_then_artifact_removed_or_corrupted(tmp_path, kind, step, harm):
    """The original exists right after the crash unless a verified removal happened (step
    'removed'); the artifact is then harmed; the next run must not lose the original."""
    _crash_then_harm(tmp_path, kind, step, harm, _crash_in_process)


KILL_CASES = [c for c in CASES if c[0] == "plain" or c[1] in ("committed", "vaulted")]


@pytest.mark.slow
@pytest.mark.parametrize("kind,step,harm", KILL_CASES, ids=[f"{k}-{s}-{h}" for k, s, h in KILL_CASES])
def test_kill9_then_artifact_removed_or_corrupted(tmp_path, kind, step, harm):
    """The same with a real SIGKILL of a separate process."""
    _crash_then_harm(tmp_path, kind, step, harm, _crash)


def test_kill9_after_commit_then_artifact_corrupted(tmp_path):
    """The default run's real-kill variant: the case #4 was about."""
    _crash_then_harm(tmp_path, "plain", "committed", "corrupt", _crash)


def _crash_then_harm(tmp_path, kind, step, harm, crash):
    src = write_jpeg(tmp_path / "c" / kind / "a.jpg", seed=5, size=(96, 64))
    orig = src.read_bytes()
    crash(tmp_path / "state", src, step)
    ctx = make_context(tmp_path / "state")
    try:
        present = src.exists()
        cp = _compressed(ctx, src) or next((p for p in src.parent.iterdir() if p.suffix in (".jxl", ".dlc")), None)
        if cp is not None and cp.exists():
            if harm == "remove":
                cp.unlink()
            else:
                b = bytearray(cp.read_bytes())
                b[len(b) // 2] ^= 0xFF
                cp.write_bytes(bytes(b))
        recover_pending(ctx)
        o = archive_file(src, ctx)
        TRIALS.append((kind, step, harm))
        if present:  # the original existed when the artifact was harmed: it must survive
            assert src.exists() or o.state == COMMITTED, o
            if not src.exists():  # archived again from the intact original: a verified replacement
                with ctx.catalog.session() as s:
                    row = q.latest_version(s, str(src))
                assert replacement_holds(row, ctx.codec).ok
            else:
                assert src.read_bytes() == orig
        assert disk_problems(ctx, tmp_path / "c") == [] or not present
    finally:
        ctx.catalog.close()


def test_recovery_never_removes_an_original_whose_replacement_is_gone(tmp_path):
    """#4: crash after commit, then the compressed file disappears: recovery unlinked the
    original anyway, so neither copy existed."""
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = src.read_bytes()
    _crash(tmp_path / "state", src, "committed")
    ctx = make_context(tmp_path / "state")
    _compressed(ctx, src).unlink()
    done = recover_pending(ctx)
    assert src.read_bytes() == orig and "replacement lost" in done[0][1]
    with ctx.catalog.session() as s:
        r = q.latest_version(s, str(src))
        assert r.state == FAILED and "replacement_lost" in [e.kind for e in q.events_for(s, r)]
    o = archive_file(src, ctx)  # archived again, properly
    assert o.state == COMMITTED and not src.exists() and replacement_holds(_row(ctx, src), ctx.codec).ok
    assert verify(ctx.catalog, vault=ctx.vault, codec=ctx.codec).mismatches == []
    ctx.catalog.close()


def _row(ctx, src):
    with ctx.catalog.session() as s:
        return q.latest_version(s, str(src))


def test_dispose_reads_the_artifact_back_before_removing(tmp_path, monkeypatch):
    """The artifact damaged between the check and the removal: the original stays."""
    from archiver.work import writers

    src = write_png(tmp_path / "c" / "plain" / "g.png", size=(128, 96))
    orig = src.read_bytes()
    ctx = make_context(tmp_path / "state")
    real = writers.RealWriters.remove_original

    def harm_then_remove(self, job):
        Path(job.row.compressed_path).write_bytes(b"damaged")
        return real(self, job)

    monkeypatch.setattr(writers.RealWriters, "remove_original", harm_then_remove)
    o = archive_file(src, ctx)
    assert o.state == FAILED and "original kept" in o.error and src.read_bytes() == orig
    kind, _ = why_not_remove(_row(ctx, src), src, ctx) or (LOST, "")
    assert kind == LOST
    monkeypatch.undo()
    assert archive_file(src, ctx).state == COMMITTED and not src.exists()
    assert disk_problems(ctx, tmp_path / "c") == []
    ctx.catalog.close()
