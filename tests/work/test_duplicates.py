"""Exact duplicates stored once (issue 28): a copy shares the committed original's artifact,
costs no artifact bytes, restores byte-exact to its own path with its own mode and mtime, and no
shared artifact is removed while a row still needs it (forget, vault expiry, a lost replacement,
a crash at every step of the copy's work)."""

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.catalog import duplicates as dup
from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED, FAILED, FORGOTTEN, ORIG_PRESENT, FileVersion
from archiver.testing.catalog import disk_problems, make_context, write_jpeg
from archiver.work import archive_file, recover_pending
from archiver.work.forget import forget
from archiver.work.restore import restore
from archiver.work.share import FAULT_STEPS
from archiver.work.verify import expire_vault, stats, verify
from archiver.work.writers import RealWriters

RUNNER = """
import sys
from archiver.work import archive_file
from archiver.testing.catalog import make_context
ctx = make_context(sys.argv[1])
print(archive_file(sys.argv[2], ctx).state)
"""


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def row_of(ctx, path) -> FileVersion:
    with ctx.catalog.session() as s:
        return q.latest_version(s, str(path))


def copies(tmp_path, kind="plain", n=2, seed=4) -> list[Path]:
    """``n`` byte-identical files in different folders, each with its own mode and mtime."""
    first = write_jpeg(tmp_path / "c" / kind / "a" / "x.jpg", seed=seed)
    out = [first]
    for i in range(1, n):
        p = tmp_path / "c" / kind / f"d{i}" / "x.jpg"
        p.parent.mkdir(parents=True)
        shutil.copyfile(first, p)
        out.append(p)
    for i, p in enumerate(out):
        os.chmod(p, (0o640, 0o604, 0o644, 0o600)[i % 4])
        os.utime(p, ns=(1_600_000_000_000_000_000 + i * 10**12,) * 2)
    return out


def stat_of(p: Path) -> tuple[int, int]:
    st = os.stat(p)
    return st.st_mode & 0o7777, st.st_mtime_ns


def test_a_copy_shares_the_artifact_and_costs_no_bytes(tmp_path, ctx):
    paths = copies(tmp_path, n=3)
    data, stats_before = paths[0].read_bytes(), [stat_of(p) for p in paths]
    outs = [archive_file(p, ctx) for p in paths]
    assert [o.state for o in outs] == [COMMITTED] * 3
    owner, *rest = [row_of(ctx, p) for p in paths]
    assert owner.artifact_of is None and owner.compressed_size > 0
    for r in rest:
        assert (r.artifact_of, r.compressed_path, r.compressed_size) == (owner.id, owner.compressed_path, 0)
        assert r.original_status == "removed"
    assert outs[1].shares == str(paths[0]) and outs[1].size_after == 0
    artifacts = sorted(p.name for p in (tmp_path / "c").rglob("*.jxl"))
    assert artifacts == ["x.jpg.jxl"]  # one stored file for three copies
    total = stats(ctx.catalog)["total"]
    assert total["bytes_after"] == owner.compressed_size and total["bytes_before"] == 3 * len(data)
    with ctx.catalog.session() as s:
        assert dup.artifact_refs(s, owner.compressed_path) == 3
    res = restore(ctx.catalog, [str(tmp_path / "c")], vault=ctx.vault, codecs=ctx.codecs)
    assert sorted(r.status for r in res) == ["restored"] * 3
    for p, before in zip(paths, stats_before):
        assert p.read_bytes() == data and stat_of(p) == before


def test_a_copy_replaced_by_a_newer_file_at_the_moment_of_removal_is_never_deleted(tmp_path, ctx):
    """A copy's original goes through the same removal gate as any other (issue 22's F1): a new
    file renamed over its name after every check, as an editor's save does, stays."""
    from unittest import mock

    from archiver.work import faults

    first, second = copies(tmp_path)
    assert archive_file(first, ctx).state == COMMITTED
    newer = second.with_name("edit.tmp")
    write_jpeg(newer, seed=99)
    data = newer.read_bytes()

    def fault(name, done=[]):
        if name == "taking" and not done:
            done.append(name)
            os.rename(newer, second)

    with mock.patch.object(faults, "fault", fault):
        o = archive_file(second, ctx)
    assert o.state == COMMITTED and row_of(ctx, second).artifact_of == row_of(ctx, first).id
    assert second.read_bytes() == data  # the user's newer file is there, untouched
    with ctx.catalog.session() as s:
        assert "original_changed" in [e.kind for e in q.events_for(s, row_of(ctx, second))]


def test_a_copy_with_other_rule_or_content_gets_its_own_artifact(tmp_path, ctx):
    a = write_jpeg(tmp_path / "c" / "plain" / "x.jpg", seed=4)
    b = tmp_path / "c" / "vault" / "x.jpg"  # same bytes, another rule
    b.parent.mkdir(parents=True)
    shutil.copyfile(a, b)
    archive_file(a, ctx), archive_file(b, ctx)
    ra, rb = row_of(ctx, a), row_of(ctx, b)
    assert rb.artifact_of is None and rb.compressed_path != ra.compressed_path and rb.compressed_size > 0


def test_a_damaged_artifact_is_not_shared(tmp_path, ctx):
    a, b = copies(tmp_path)
    archive_file(a, ctx)
    cp = Path(row_of(ctx, a).compressed_path)
    os.chmod(cp, 0o644)
    cp.write_bytes(cp.read_bytes()[:-10])
    archive_file(b, ctx)
    rb = row_of(ctx, b)
    assert rb.artifact_of is None and rb.compressed_path != str(cp)
    assert restore(ctx.catalog, [str(b)], vault=ctx.vault, codecs=ctx.codecs)[0].status == "restored"


def test_forget_of_one_copy_leaves_the_others_restorable(tmp_path, ctx):
    paths = copies(tmp_path, n=3)
    data = paths[0].read_bytes()
    for p in paths:
        archive_file(p, ctx)
    owner = row_of(ctx, paths[0])
    (f,) = forget(ctx.catalog, [str(paths[0])], vault=ctx.vault, force=True, reason="test")
    assert f.status == "forgotten" and Path(owner.compressed_path).is_file()
    heir, other = row_of(ctx, paths[1]), row_of(ctx, paths[2])
    assert (heir.artifact_of, heir.compressed_size) == (None, owner.compressed_size)  # the bytes stay counted once
    assert other.artifact_of == heir.id
    assert stats(ctx.catalog)["total"]["bytes_after"] == owner.compressed_size
    forget(ctx.catalog, [str(paths[1])], vault=ctx.vault, force=True)
    res = restore(ctx.catalog, [str(paths[2])], vault=ctx.vault, codecs=ctx.codecs)
    assert res[0].status == "restored" and paths[2].read_bytes() == data
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
    assert rep.mismatches == [] and rep.ok == rep.total == 1


def test_vault_expiry_of_one_copy_leaves_the_others_restorable(tmp_path):
    now = [dt.datetime(2026, 1, 1)]
    ctx = make_context(tmp_path / "state", now=lambda: now[0])
    try:
        a, b = copies(tmp_path, kind="vault")
        data = a.read_bytes()
        archive_file(a, ctx)
        now[0] += dt.timedelta(days=2)
        archive_file(b, ctx)
        ra, rb = row_of(ctx, a), row_of(ctx, b)
        assert rb.artifact_of == ra.id and ra.vault_path == rb.vault_path
        assert expire_vault(ctx.catalog, ctx.vault, now=dt.datetime(2026, 1, 4, 12)).gone == []  # a's ended, b's not
        assert expire_vault(ctx.catalog, ctx.vault, now=dt.datetime(2026, 1, 7)).gone == [ra.sha256]
        assert Path(ra.compressed_path).is_file()
        res = restore(ctx.catalog, [str(a), str(b)], vault=ctx.vault, codecs=ctx.codecs)
        assert [(r.status, r.source) for r in res] == [("restored", "lossless")] * 2
        assert a.read_bytes() == data == b.read_bytes()
    finally:
        ctx.catalog.close()


def test_in_place_restore_of_one_copy_leaves_the_shared_artifact(tmp_path, ctx):
    a, b = copies(tmp_path)
    data = a.read_bytes()
    archive_file(a, ctx), archive_file(b, ctx)
    cp = Path(row_of(ctx, a).compressed_path)
    assert restore(ctx.catalog, [str(a)], vault=ctx.vault, codecs=ctx.codecs)[0].status == "restored"
    assert cp.is_file() and not b.exists()
    assert restore(ctx.catalog, [str(b)], vault=ctx.vault, codecs=ctx.codecs)[0].status == "restored"
    assert b.read_bytes() == data


def test_a_lost_replacement_is_not_removed_while_another_row_needs_it(tmp_path, ctx):
    """The copy's dispose finds the shared file damaged: the copy keeps its original and is tried
    again, and the file stays while the original's row still names it."""
    a, b = copies(tmp_path)
    archive_file(a, ctx)
    w = RealWriters(ctx)
    rb_path = row_of(ctx, a).compressed_path
    archive_file(b, ctx)
    rb = row_of(ctx, b)
    w.discard_lost(rb)  # what dispose/recovery do with a row whose replacement does not hold
    assert Path(rb_path).is_file()
    forget(ctx.catalog, [str(a)], vault=ctx.vault, force=True)
    forget(ctx.catalog, [str(b)], vault=ctx.vault, force=True)
    with ctx.catalog.session() as s:
        assert dup.artifact_refs(s, rb_path) == 0


def test_recovery_of_a_copy_whose_shared_file_was_damaged_keeps_it_for_the_owner(tmp_path, ctx):
    a, b = copies(tmp_path)
    data = b.read_bytes()
    archive_file(a, ctx)
    cp = Path(row_of(ctx, a).compressed_path)
    from unittest import mock

    from archiver.work import faults

    class Crash(Exception):
        pass

    def fault(name):
        if name == "committed":
            raise Crash(name)

    with mock.patch.object(faults, "fault", fault), pytest.raises(Crash):
        archive_file(b, ctx)
    assert row_of(ctx, b).original_status == ORIG_PRESENT
    os.chmod(cp, 0o644)
    cp.write_bytes(b"damaged")
    recover_pending(ctx)
    rb = row_of(ctx, b)
    assert rb.state == FAILED and b.read_bytes() == data  # the copy's original stays
    assert cp.read_bytes() == b"damaged"  # not removed: the owner's row still names it (verify reports it)
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
    assert [m["path"] for m in rep.mismatches] == [str(a)]


CASES = [("plain", s) for s in FAULT_STEPS if s != "vaulted"] + [("vault", s) for s in ("vaulted", "committed", "removed")]


@pytest.mark.parametrize("kind,step", CASES, ids=[f"{k}-{s}" for k, s in CASES])
def test_kill9_at_every_step_of_a_copy(tmp_path, kind, step):
    """A copy killed at each step: the shared artifact is untouched, the original's row restores,
    and a rerun finishes the copy (sharing) with nothing lost or left over."""
    state = tmp_path / "state"
    a, b = copies(tmp_path, kind=kind)
    data, b_stat = a.read_bytes(), stat_of(b)
    ctx = make_context(state)
    archive_file(a, ctx)
    owner = row_of(ctx, a)
    art = Path(owner.compressed_path).read_bytes()
    ctx.catalog.close()
    r = subprocess.run([sys.executable, "-c", RUNNER, str(state), str(b)], env=dict(os.environ, ARCHIVER_FAULT=step),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, f"the fault at {step!r} did not fire: {r.stdout} {r.stderr[-2000:]}"
    ctx = make_context(state)
    try:
        assert Path(owner.compressed_path).read_bytes() == art
        assert b.exists() or row_of(ctx, b).state == COMMITTED  # nothing lost right after the crash
        o = archive_file(b, ctx)  # restart: recovers and finishes
        assert o.state in (COMMITTED, "unchanged"), o
        rb = row_of(ctx, b)
        assert (rb.artifact_of, rb.compressed_path) == (owner.id, owner.compressed_path)
        assert Path(owner.compressed_path).read_bytes() == art
        assert disk_problems(ctx, tmp_path / "c") == []
        rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
        assert rep.mismatches == [] and rep.ok == rep.total == 2
        res = restore(ctx.catalog, [str(a), str(b)], vault=ctx.vault, codecs=ctx.codecs)
        assert [x.status for x in res] == ["restored", "restored"]
        assert a.read_bytes() == data == b.read_bytes() and stat_of(b) == b_stat
    finally:
        ctx.catalog.close()


def test_the_dry_run_of_a_copy_of_an_archived_file_shows_no_artifact_bytes(tmp_path, ctx):
    import dataclasses

    a, b = copies(tmp_path)
    archive_file(a, ctx)
    before = sorted(p.name for p in (tmp_path / "c").rglob("*"))
    o = archive_file(b, dataclasses.replace(ctx, dry_run=True))
    assert (o.state, o.size_after, o.shares) == ("dry-run", 0, str(a)) and o.size_before == b.stat().st_size
    assert sorted(p.name for p in (tmp_path / "c").rglob("*")) == before and row_of(ctx, b) is None
