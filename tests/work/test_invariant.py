"""The one invariant: an original is removed only when the artifact read back from disk gives what
the catalog promises. A crash at every step, then the artifact removed or corrupted before the
next run: the original is never lost (issue 11 #4 and the fault corpus)."""

import sys
from pathlib import Path

import pytest

from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED, FAILED
from archiver.testing.catalog import disk_problems, make_context, write_jpeg, write_png
from archiver.work import FAULT_STEPS, archive_file, recover_pending, verify
from archiver.work.invariant import LOST, replacement_holds, why_not_remove

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import faultcorpus  # noqa: E402  (tests/faultcorpus.py: the corpus, shared with bench/fuzz_faults.py)

_crash = faultcorpus.crash_kill9
#: the default run: every kind of file, every step, the artifact removed or corrupted (in process);
#: bench/fuzz_faults.py runs every harm with fresh images and real kills (docs/safety.md)
CASES = faultcorpus.cases(harms=("remove", "corrupt"))
#: steps after which an artifact exists on disk (a harm before them has nothing to harm)
ARTIFACT_STEPS = FAULT_STEPS[FAULT_STEPS.index("written"):]


@pytest.mark.parametrize("kind,step,harm", CASES, ids=[f"{k}-{s}-{h}" for k, s, h in CASES])
def test_crash_then_artifact_removed_or_corrupted(tmp_path, kind, step, harm):
    """The original exists right after the crash unless a verified removal happened (step
    'removed'); the artifact is then harmed; the next run must not lose the original."""
    _check(faultcorpus.trial(tmp_path, kind, step, harm))


KILL_CASES = [c for c in CASES if c[0] == "plain" or c[1] in ("committed", "vaulted")]


@pytest.mark.slow
@pytest.mark.parametrize("kind,step,harm", KILL_CASES, ids=[f"{k}-{s}-{h}" for k, s, h in KILL_CASES])
def test_kill9_then_artifact_removed_or_corrupted(tmp_path, kind, step, harm):
    """The same with a real SIGKILL of a separate process."""
    _check(faultcorpus.trial(tmp_path, kind, step, harm, crash=_crash))


def test_kill9_after_commit_then_artifact_corrupted(tmp_path):
    """The default run's real-kill variant: the case #4 was about."""
    _check(faultcorpus.trial(tmp_path, "plain", "committed", "corrupt", crash=_crash))


def test_the_corpus_harms_a_real_artifact(tmp_path):
    """Not vacuous: every kind is really archived (a JPEG too small for JPEG XL would be kept and
    nothing harmed), and a harm after a verified removal is reported, not hidden."""
    r = faultcorpus.trial(tmp_path / "a", "plain", "removed", "corrupt")
    assert r["harmed"] and r["action"] == "lossless" and not r["present_after_crash"]
    assert r["problems"] and not r["restored"]  # the only copy was damaged: verify's business
    r = faultcorpus.trial(tmp_path / "b", "vault", "removed", "remove")
    assert r["harmed"] and r["restored"] and r["exact"] == "bytes"  # the vault copy


def _check(r):
    assert not r["lost"], r
    assert r["crashed"], r  # the crash really happened: a trial without it proves nothing
    if r["step"] in ARTIFACT_STEPS:
        assert r["harmed"], r  # the trial reached a real artifact
    if r["present_after_crash"]:
        assert r["problems"] == [], r
        assert r["on_disk"] or r["restored"], r


def _compressed(ctx, src):
    with ctx.catalog.session() as s:
        r = q.latest_version(s, str(src))
    return Path(r.compressed_path) if r is not None and r.compressed_path else None


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
    assert o.state == COMMITTED and not src.exists() and replacement_holds(_row(ctx, src), ctx.codecs).ok
    assert verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs).mismatches == []
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
