"""Direct tests of each branch of the safety core (issue 22: the mutation bench left checks that
could be deleted with every test green): the removal gate and its protocol (``work/invariant``,
``work/files``), the read-back check, dispose's outcomes, and the crash-safe file primitives
(``storage/atomic``: fsync and link behaviour through recording fakes) and the vault.

``bench/mutation.py`` runs these first for every mutant of those files."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED, FAILED, ORIG_KEPT, ORIG_PRESENT, ORIG_REMOVED, FileVersion
from archiver.testing.catalog import make_context, write_jpeg, write_png
from archiver.errors import ArchiverError
from archiver.storage import atomic
from archiver.storage.vault import Vault, VaultError
from archiver.work import archive_file, files, invariant, writers
from archiver.work.invariant import BUSY, CHANGED, KEPT_BESIDE, LOST, NO_VAULT


# -- helpers ------------------------------------------------------------------------------------
def _row(ctx, src) -> FileVersion:
    with ctx.catalog.session() as s:
        return q.latest_version(s, str(src))


def _kinds(ctx, src) -> list[str]:
    with ctx.catalog.session() as s:
        return [e.kind for e in q.events_for(s, q.latest_version(s, str(src)))]


@pytest.fixture
def committed(tmp_path, monkeypatch):
    """A lossless-replace file archived and committed, its original still there (the removal is
    held back): (ctx, src, row)."""
    ctx = make_context(tmp_path / "state")
    src = write_png(tmp_path / "c" / "png" / "g.png", seed=2, size=(128, 96))
    with monkeypatch.context() as m:
        m.setattr(writers.RealWriters, "remove_original", lambda self, job: (BUSY, "held back by the test"))
        archive_file(src, ctx)
    row = _row(ctx, src)
    assert row.state == COMMITTED and row.original_status == ORIG_PRESENT and src.exists()
    yield ctx, src, row
    ctx.catalog.close()


def _fsync_sizes(monkeypatch) -> list:
    """Record the size of every file as it is fsynced (what had reached it by then)."""
    sizes = []
    real = os.fsync

    def fsync(fd):
        sizes.append(os.fstat(fd).st_size)
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return sizes


def _fsyncs(monkeypatch) -> list:
    """Record every fsync (file descriptors resolved to what they point at)."""
    seen = []
    real = os.fsync

    def fsync(fd):
        try:
            seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            seen.append(fd)
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


# -- replacement_holds: every way an artifact can fail ------------------------------------------
def test_replacement_holds_for_a_good_artifact(committed):
    ctx, src, row = committed
    held = invariant.replacement_holds(row, ctx.codecs)
    assert held.ok and held.restored is not None and held.why == ""


@pytest.mark.parametrize("harm,why", [
    ("no-path", "no compressed file recorded"), ("missing", "compressed file missing"),
    ("unreadable", "unreadable"), ("damaged", "SHA-256 mismatch"),
    ("refused", "does not give back"), ("crash", "does not decode"), ("wrong", "does not give back")])
def test_replacement_holds_fails_for_every_harm(committed, monkeypatch, harm, why):
    ctx, src, row = committed
    cp = Path(row.compressed_path)
    if harm == "no-path":
        row.compressed_path = None
    elif harm == "missing":
        cp.unlink()
    elif harm == "unreadable":
        cp.unlink()
        cp.mkdir()  # reading a directory: an OSError that is not "missing"
    elif harm == "damaged":
        cp.write_bytes(cp.read_bytes()[:-1] + b"\0")
    else:
        codec = ctx.codecs.for_row(row)
        if harm == "refused":
            def restore(data, recorded):
                raise ArchiverError("refused by the codec")
        elif harm == "crash":
            def restore(data, recorded):
                raise RuntimeError("decoder crashed")
        else:  # gives back other content: the codec's own comparison with the record fails
            row.sha256 = row.reconstruction_sha256 = "0" * 64
            restore = codec.restore
        monkeypatch.setattr(type(codec), "restore", staticmethod(restore)) if harm != "wrong" else None
    held = invariant.replacement_holds(row, ctx.codecs)
    assert not held.ok and why in held.why, held.why
    if harm == "refused":
        assert isinstance(held.error, ArchiverError)


# -- why_not_remove: the checks before taking ---------------------------------------------------
def test_nothing_stops_a_good_removal(committed):
    ctx, src, row = committed
    assert invariant.why_not_remove(row, src, ctx) is None


@pytest.mark.parametrize("what", ["size", "mtime", "inode", "gone", "symlink"])
def test_a_changed_original_is_not_taken(committed, what):
    ctx, src, row = committed
    if what == "size":
        row.size += 1
    elif what == "mtime":
        row.mtime_ns += 1
    elif what == "inode":
        row.inode += 1
    elif what == "gone":
        src.unlink()
    else:
        data = src.read_bytes()
        src.unlink()
        (src.parent / "real.png").write_bytes(data)
        src.symlink_to(src.parent / "real.png")
    assert invariant.why_not_remove(row, src, ctx)[0] == CHANGED


def test_an_original_open_for_writing_is_not_taken(committed):
    ctx, src, row = committed
    with open(src, "r+b"):
        assert invariant.why_not_remove(row, src, ctx)[0] == BUSY
        assert invariant.remove_original(row, src, ctx)[0] == BUSY
    assert src.exists()


@pytest.mark.parametrize("why", ["changed", "busy", "lost"])
def test_an_original_that_fails_a_check_is_never_moved(committed, monkeypatch, why):
    """The checks come before taking: a file that fails one stays where it is, untouched (not
    taken and given back: a writer or a viewer would see it vanish for a moment)."""
    ctx, src, row = committed
    monkeypatch.setattr(files, "take", lambda *a: pytest.fail("taken although a check failed"))
    held = None
    if why == "changed":
        row.size += 1
    elif why == "busy":
        held = open(src, "r+b")
    else:
        Path(row.compressed_path).write_bytes(b"damaged")
    try:
        ino = os.stat(src).st_ino
        assert invariant.remove_original(row, src, ctx)[0] == {"changed": CHANGED, "busy": BUSY, "lost": LOST}[why]
        assert os.stat(src).st_ino == ino
    finally:
        if held:
            held.close()


def test_a_lost_replacement_stops_the_removal(committed):
    ctx, src, row = committed
    Path(row.compressed_path).write_bytes(b"damaged")
    assert invariant.why_not_remove(row, src, ctx)[0] == LOST
    assert invariant.remove_original(row, src, ctx)[0] == LOST and src.exists()


@pytest.mark.parametrize("vault", ["none", "missing", "damaged", "good"])
def test_the_vault_copy_must_verify_for_a_vault_disposition(committed, vault):
    ctx, src, row = committed
    row.disposition = "vault"
    if vault == "none":
        ctx.vault = None
    elif vault in ("damaged", "good"):
        p = ctx.vault.put(src, row.sha256)
        if vault == "damaged":
            os.chmod(p, 0o644)
            p.write_bytes(b"x" * p.stat().st_size)
    why = invariant.why_not_remove(row, src, ctx)
    assert (why is None) if vault == "good" else (why[0] == NO_VAULT)


# -- remove_original: the protocol --------------------------------------------------------------
def test_removal_takes_then_compares_then_drops_durably(committed, monkeypatch):
    ctx, src, row = committed
    calls = []
    for name in ("take", "differs", "drop"):
        real = getattr(files, name)
        monkeypatch.setattr(files, name, lambda *a, _n=name, _r=real: (calls.append(_n), _r(*a))[1])
    synced = _fsyncs(monkeypatch)
    assert invariant.remove_original(row, src, ctx) is None
    assert calls == ["take", "differs", "drop"] and not src.exists()
    assert not files.taken_path(src, row.id).exists()
    assert synced.count(str(src.parent)) >= 2  # the take and the drop are each made durable


def test_only_the_sha256_of_what_was_taken_can_tell(committed):
    """Same inode, size and mtime, other bytes: only the hash after taking catches it."""
    ctx, src, row = committed
    st = os.stat(src)
    data = bytearray(src.read_bytes())
    data[-20] ^= 1
    with open(src, "r+b") as f:
        f.write(bytes(data))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    kind, why = invariant.remove_original(row, src, ctx)
    assert kind == CHANGED and "content changed" in why and src.read_bytes() == bytes(data)


def test_a_leftover_taken_file_is_finished_without_a_new_check_of_the_name(committed):
    """A crash after taking: the next call compares what was taken (the name may hold anything)."""
    ctx, src, row = committed
    taken = files.taken_path(src, row.id)
    os.rename(src, taken)
    src.write_bytes(b"a new file at the name")
    assert invariant.remove_original(row, src, ctx) is None
    assert not taken.exists() and src.read_bytes() == b"a new file at the name"


def test_a_leftover_taken_file_goes_back_when_the_replacement_is_lost(committed):
    ctx, src, row = committed
    orig = src.read_bytes()
    taken = files.taken_path(src, row.id)
    os.rename(src, taken)
    Path(row.compressed_path).unlink()
    kind, _ = invariant.remove_original(row, src, ctx)
    assert kind == LOST and src.read_bytes() == orig and not taken.exists()


def test_kept_beside_when_the_name_was_written_again(committed, monkeypatch):
    ctx, src, row = committed
    orig = src.read_bytes()
    real_take = files.take

    def take_then_user_writes(path, taken):
        real_take(path, taken)
        with open(taken, "r+b") as f:  # changed in place after it was taken ...
            f.seek(0, 2)
            f.write(b"more")
        path.write_bytes(b"new")  # ... and a new file at the name

    monkeypatch.setattr(files, "take", take_then_user_writes)
    kind, why = invariant.remove_original(row, src, ctx)
    kept = files.conflict_path(src, row.id)
    assert kind == KEPT_BESIDE and str(kept) in why
    assert src.read_bytes() == b"new" and kept.read_bytes() == orig + b"more"


# -- files: the primitives ---------------------------------------------------------------------
def test_differs_checks_each_property(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    st = os.stat(f)
    sha = hashlib.sha256(b"abc").hexdigest()
    good = files.Identity(sha, st.st_size, st.st_mtime_ns, st.st_ino)
    assert files.differs(f, good) is None
    for bad, word in [(files.Identity("0" * 64, st.st_size, st.st_mtime_ns, st.st_ino), "content"),
                      (files.Identity(sha, st.st_size + 1, st.st_mtime_ns, st.st_ino), "size"),
                      (files.Identity(sha, st.st_size, st.st_mtime_ns + 1, st.st_ino), "modification"),
                      (files.Identity(sha, st.st_size, st.st_mtime_ns, st.st_ino + 1), "inode")]:
        kind, why = files.differs(f, bad)
        assert kind == files.DIFFERENT and word in why
    with open(f, "ab"):
        assert files.differs(f, good)[0] == files.WRITTEN_TO
    link = tmp_path / "l"
    link.symlink_to(f)
    assert files.differs(link, files.Identity(sha))[0] == files.DIFFERENT
    d = tmp_path / "d"
    d.mkdir()
    assert files.differs(d, files.Identity(sha))[0] == files.DIFFERENT
    assert files.differs(tmp_path / "none", good)[0] == files.DIFFERENT


def test_looks_same_and_same_file(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    st = os.stat(f)
    sha = hashlib.sha256(b"abc").hexdigest()
    assert files.looks_same(f, files.Identity(sha, st.st_size, st.st_mtime_ns, st.st_ino))
    assert not files.looks_same(f, files.Identity(sha, st.st_size, st.st_mtime_ns, st.st_ino + 1))
    assert files.looks_same(f, files.Identity(sha))  # nothing recorded but the hash: the hash decides later
    assert not files.looks_same(tmp_path / "none", files.Identity(sha))
    assert files.same_file(f, st.st_size, st.st_mtime_ns, sha)
    assert not files.same_file(f, st.st_size, st.st_mtime_ns, "0" * 64)
    assert not files.same_file(f, st.st_size + 1, st.st_mtime_ns, sha)
    assert not files.same_file(tmp_path / "none", st.st_size, st.st_mtime_ns, sha)


def test_give_back_never_replaces_a_file(tmp_path):
    taken, path, conflict = tmp_path / ".t", tmp_path / "a.png", tmp_path / "a.kept.png"
    taken.write_bytes(b"old")
    assert files.give_back(taken, path, conflict) == path and path.read_bytes() == b"old" and not taken.exists()
    taken.write_bytes(b"old2")
    assert files.give_back(taken, path, conflict) == conflict and path.read_bytes() == b"old"
    taken.write_bytes(b"old3")
    second = files.give_back(taken, path, conflict)
    assert second not in (path, conflict) and second.read_bytes() == b"old3" and conflict.read_bytes() == b"old2"


def test_remove_own_removes_only_the_file_written(tmp_path):
    f = tmp_path / "a.jpg.jxl"
    f.write_bytes(b"ours")
    sha = hashlib.sha256(b"ours").hexdigest()
    assert files.remove_own(tmp_path / "absent", 1, sha) is None
    f.write_bytes(b"theirs")
    why = files.remove_own(f, 1, sha)
    assert why and "content changed" in why and f.read_bytes() == b"theirs"
    f.write_bytes(b"ours")
    assert files.remove_own(f, 1, sha) is None and not f.exists()
    f.symlink_to(tmp_path / "elsewhere")
    assert files.remove_own(f, 1, None) and f.is_symlink()  # not a regular file: left
    assert not [p for p in tmp_path.iterdir() if atomic.is_private_name(p)]


def test_take_refuses_to_replace_a_taken_name(tmp_path):
    a, t = tmp_path / "a", tmp_path / "t"
    a.write_bytes(b"1")
    t.write_bytes(b"2")
    with pytest.raises(FileExistsError):
        files.take(a, t)
    assert a.read_bytes() == b"1" and t.read_bytes() == b"2"


# -- check: the artifact as read back -----------------------------------------------------------
def test_check_judges_the_bytes_read_back_from_disk(tmp_path, monkeypatch):
    """The file on disk differs from what was written (a bad disk): the check refuses it, the
    job falls back, and the original stays."""
    ctx = make_context(tmp_path / "state")
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = src.read_bytes()
    monkeypatch.setattr(writers.RealWriters, "read_artifact", lambda self, p: p.read_bytes()[:-1] + b"\0")
    o = archive_file(src, ctx)
    assert o.action == "keep" and src.read_bytes() == orig
    assert any("does not read back identically" in r for r in o.reasons)
    ctx.catalog.close()


# -- dispose: each outcome recorded as what it is -----------------------------------------------
@pytest.mark.parametrize("kind,event,status,state", [
    (CHANGED, "original_changed", ORIG_REMOVED, COMMITTED), (KEPT_BESIDE, "original_kept_beside", ORIG_REMOVED, COMMITTED),
    (BUSY, "dispose_failed", ORIG_PRESENT, COMMITTED), (NO_VAULT, "vault_missing", ORIG_KEPT, COMMITTED),
    (LOST, "replacement_lost", None, FAILED)])
def test_dispose_records_each_outcome(tmp_path, monkeypatch, kind, event, status, state):
    ctx = make_context(tmp_path / "state")
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    monkeypatch.setattr(writers.RealWriters, "remove_original", lambda self, job: (kind, "because"))
    o = archive_file(src, ctx)
    row = _row(ctx, src)
    assert (row.state, row.original_status) == (state, status) and event in _kinds(ctx, src)
    artifact_kept = kind != LOST
    assert (o.compressed_path is not None and Path(o.compressed_path).exists()) == artifact_kept
    assert src.exists()  # the gate said no: nothing was removed
    ctx.catalog.close()


def test_dispose_removes_and_records_only_when_the_gate_says_so(tmp_path):
    ctx = make_context(tmp_path / "state")
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    o = archive_file(src, ctx)
    assert o.original_status == ORIG_REMOVED and not src.exists() and "original_removed" in _kinds(ctx, src)
    ctx.catalog.close()


def test_keep_disposition_never_reaches_the_gate(tmp_path, monkeypatch):
    ctx = make_context(tmp_path / "state")
    src = write_jpeg(tmp_path / "c" / "keep" / "a.jpg")
    monkeypatch.setattr(writers.RealWriters, "remove_original", lambda self, job: pytest.fail("gate asked"))
    assert archive_file(src, ctx).original_status == ORIG_KEPT and src.exists()
    ctx.catalog.close()


# -- recovery ------------------------------------------------------------------------------------
def test_recovery_rolls_back_and_removes_only_its_own_artifact(tmp_path):
    from archiver.work.recovery import recover

    ctx = make_context(tmp_path / "state")
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    o = archive_file(src, ctx)
    cp = Path(o.compressed_path)
    with ctx.catalog.session() as s:  # as if killed before the commit
        r = q.latest_version(s, str(src))
        r.state, r.original_status = "verified", None
    src.write_bytes(b"placeholder")  # the original is never touched by a rollback
    note = recover(src, ctx)
    assert "rolled back" in note and not cp.exists() and src.read_bytes() == b"placeholder"
    assert _row(ctx, src).state == FAILED
    ctx.catalog.close()


def test_recovery_rolls_back_a_half_written_temporary_of_the_row(tmp_path):
    from archiver.work.recovery import recover

    ctx = make_context(tmp_path / "state")
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    o = archive_file(src, ctx)
    cp = Path(o.compressed_path)
    tmp = files.tmp_for(cp, _row(ctx, src).id)
    tmp.write_bytes(b"half written")  # as if killed while writing the compressed file
    with ctx.catalog.session() as s:
        r = q.latest_version(s, str(src))
        r.state, r.original_status = "encoded", None
    src.write_bytes(b"placeholder")
    assert "rolled back" in recover(src, ctx)
    assert not tmp.exists() and not cp.exists()
    ctx.catalog.close()


def test_the_removed_fault_step_is_reached_only_when_the_original_went(tmp_path, monkeypatch):
    """The crash tests kill at 'removed' to test a crash after a removal; a refused removal must
    not pass that boundary (it would test a state that never happens)."""
    from archiver.work import faults

    reached = []
    monkeypatch.setattr(faults, "fault", lambda step: reached.append(step))
    ctx = make_context(tmp_path / "state")
    held = write_png(tmp_path / "c" / "png" / "held.png", seed=3, size=(128, 96))
    with monkeypatch.context() as m:
        m.setattr(writers.RealWriters, "remove_original", lambda self, job: (BUSY, "held back by the test"))
        archive_file(held, ctx)
    assert "committed" in reached and "removed" not in reached
    reached.clear()
    gone = write_png(tmp_path / "c" / "png" / "gone.png", seed=4, size=(128, 96))
    archive_file(gone, ctx)
    assert "removed" in reached and not gone.exists()
    ctx.catalog.close()


def test_recovery_records_a_vanished_original_and_touches_nothing(committed):
    from archiver.work.recovery import recover

    ctx, src, row = committed
    src.unlink()
    assert "already gone" in recover(src, ctx)
    assert _row(ctx, src).original_status == ORIG_REMOVED and Path(row.compressed_path).exists()


def test_recovery_waits_for_a_writer_without_an_event_each_time(committed):
    from archiver.work.recovery import recover

    ctx, src, row = committed
    before = _kinds(ctx, src)
    with open(src, "r+b"):
        assert "not removed yet" in recover(src, ctx)
    assert _kinds(ctx, src) == before and src.exists()
    assert "finished removing" in recover(src, ctx) and not src.exists()


# -- atomic: fsync, links, temporaries -----------------------------------------------------------
def test_write_bytes_fsyncs_file_and_directory(tmp_path, monkeypatch):
    synced = _fsyncs(monkeypatch)
    atomic.write_bytes(tmp_path / "a", b"x")
    assert str(tmp_path) in synced and any(".archiver-tmp-" in str(p) for p in synced)


def test_create_new_fsyncs_and_never_clobbers(tmp_path, monkeypatch):
    synced = _fsyncs(monkeypatch)
    atomic.create_new(tmp_path / "a", b"x", tmp_path / ".t")
    assert (tmp_path / "a").read_bytes() == b"x" and not (tmp_path / ".t").exists()
    assert str(tmp_path) in synced and str(tmp_path / ".t") in synced
    with pytest.raises(FileExistsError):
        atomic.create_new(tmp_path / "a", b"y", tmp_path / ".t")
    assert (tmp_path / "a").read_bytes() == b"x" and not (tmp_path / ".t").exists()


@pytest.mark.parametrize("err", [errno.EPERM, errno.ENOTSUP, errno.EMLINK])
def test_create_new_without_hard_links_renames_only_onto_a_free_name(tmp_path, monkeypatch, err):
    def no_links(*a, **kw):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "link", no_links)
    atomic.create_new(tmp_path / "a", b"x", tmp_path / ".t")
    assert (tmp_path / "a").read_bytes() == b"x"
    (tmp_path / "b").symlink_to(tmp_path / "nowhere")  # a dangling link is a name in use too
    for taken in ("a", "b"):
        with pytest.raises(OSError):
            atomic.create_new(tmp_path / taken, b"y", tmp_path / ".t")
    assert (tmp_path / "a").read_bytes() == b"x" and (tmp_path / "b").is_symlink()


@pytest.mark.parametrize("err", [errno.EIO, errno.EACCES, errno.ENOSPC])
def test_create_new_passes_on_other_link_errors(tmp_path, monkeypatch, err):
    def failing(*a, **kw):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "link", failing)
    with pytest.raises(OSError) as e:
        atomic.create_new(tmp_path / "a", b"x", tmp_path / ".t")
    assert e.value.errno == err and not (tmp_path / "a").exists() and not (tmp_path / ".t").exists()


def test_an_interrupt_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    for call in (lambda: atomic.write_bytes(tmp_path / "a", b"x"),
                 lambda: atomic.create_new(tmp_path / "b", b"x", tmp_path / ".t"),
                 lambda: atomic.write_in_dir(os.open(tmp_path, os.O_RDONLY), "c", b"x", overwrite=False)):
        with pytest.raises(KeyboardInterrupt):
            call()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("how", ["renameat2", "link", "rename"])
def test_rename_noreplace_never_replaces(tmp_path, monkeypatch, how):
    if how != "renameat2":
        monkeypatch.setattr(atomic, "_renameat2_noreplace", lambda a, b: False)
    if how == "rename":
        def no_links(*a, **kw):
            raise OSError(errno.EPERM, "no hard links here")

        monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        atomic.rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == b"a" and (tmp_path / "b").read_bytes() == b"b"
    atomic.rename_noreplace(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_bytes() == b"a" and not (tmp_path / "a").exists()


def test_renameat2_is_what_moves_files_here(tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    assert atomic._renameat2_noreplace(tmp_path / "a", tmp_path / "b") is True
    (tmp_path / "a").write_bytes(b"a")
    with pytest.raises(FileExistsError):
        atomic._renameat2_noreplace(tmp_path / "a", tmp_path / "b")
    with pytest.raises(OSError):
        atomic._renameat2_noreplace(tmp_path / "none", tmp_path / "x")


def test_create_new_clears_a_leftover_calls_back_before_linking_gives_0644_and_closes(tmp_path):
    (tmp_path / ".t").write_bytes(b"left by a crash")  # the fixed temp name of an earlier, killed run
    seen = []
    before = _open_fds()
    atomic.create_new(tmp_path / "a", b"new", tmp_path / ".t",
                      before_link=lambda: seen.append(((tmp_path / "a").exists(), (tmp_path / ".t").read_bytes())))
    assert _open_fds() == before
    assert seen == [(False, b"new")]  # called once the temp is complete, before the final name exists
    assert (tmp_path / "a").read_bytes() == b"new" and not (tmp_path / ".t").exists()
    assert oct(os.stat(tmp_path / "a").st_mode & 0o777) == oct(0o644)


def test_rename_noreplace_takes_strings_and_moves_a_link_not_its_target(tmp_path, monkeypatch):
    (tmp_path / "a").write_bytes(b"a")
    atomic.rename_noreplace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert (tmp_path / "b").read_bytes() == b"a"
    monkeypatch.setattr(atomic, "_renameat2_noreplace", lambda a, b: False)  # the hard-link way
    (tmp_path / "l").symlink_to(tmp_path / "b")
    atomic.rename_noreplace(tmp_path / "l", tmp_path / "m")
    assert (tmp_path / "m").is_symlink() and not os.path.lexists(tmp_path / "l")


def test_rename_noreplace_uses_renameat2_where_there_is_one(tmp_path, monkeypatch):
    def no_link(*a, **kw):
        raise AssertionError("the hard-link fallback was used although renameat2 works here")

    monkeypatch.setattr(os, "link", no_link)
    (tmp_path / "a").write_bytes(b"a")
    atomic.rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"a"


@pytest.mark.parametrize("err", [errno.EIO, errno.EACCES, errno.ENOSPC])
def test_rename_noreplace_passes_on_other_link_errors_and_moves_nothing(tmp_path, monkeypatch, err):
    def failing(*a, **kw):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(atomic, "_renameat2_noreplace", lambda a, b: False)
    monkeypatch.setattr(os, "link", failing)
    (tmp_path / "a").write_bytes(b"a")
    with pytest.raises(OSError) as e:
        atomic.rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert e.value.errno == err and (tmp_path / "a").exists() and not (tmp_path / "b").exists()


class _FakeLibc:
    def __init__(self, rc):
        self.rc = rc

    def renameat2(self, *a):
        return self.rc


@pytest.mark.parametrize("err", [errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP])
def test_renameat2_unsupported_means_fall_back(tmp_path, monkeypatch, err):
    import ctypes

    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **kw: _FakeLibc(-1))
    monkeypatch.setattr(ctypes, "get_errno", lambda: err)
    assert atomic._renameat2_noreplace(tmp_path / "a", tmp_path / "b") is False


def test_renameat2_missing_from_the_c_library_means_fall_back(tmp_path, monkeypatch):
    import ctypes

    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **kw: object())
    assert atomic._renameat2_noreplace(tmp_path / "a", tmp_path / "b") is False


def test_renameat2_passes_on_other_errors_as_they_are(tmp_path):
    with pytest.raises(FileNotFoundError):  # not mistaken for "the name is taken"
        atomic._renameat2_noreplace(tmp_path / "none", tmp_path / "x")


def test_private_names():
    assert atomic.is_private_name("/x/.archiver-tmp-a.part") and atomic.is_private_name("/x/.archiver-taken-a.1.taken")
    assert not atomic.is_private_name("/x/a.jpg") and not atomic.is_private_name("/x/.hidden.jpg")
    assert atomic.is_temp_name("/x/.archiver-tmp-a.part") and not atomic.is_temp_name("/x/.archiver-taken-a.1.taken")


def test_write_in_dir_no_clobber_and_overwrite(tmp_path, monkeypatch):
    synced = _fsyncs(monkeypatch)
    fd = atomic.open_dir_nofollow(tmp_path)
    try:
        st = atomic.write_in_dir(fd, "a", b"x", overwrite=False, mode=0o600, mtime_ns=1_000_000_000)
        assert (tmp_path / "a").read_bytes() == b"x" and st.st_mtime_ns == 1_000_000_000
        assert oct(st.st_mode & 0o777) == oct(0o600) and str(tmp_path) in synced
        with pytest.raises(FileExistsError):
            atomic.write_in_dir(fd, "a", b"y", overwrite=False)
        (tmp_path / "l").symlink_to(tmp_path / "target")
        atomic.write_in_dir(fd, "l", b"z", overwrite=True)  # a link at the name is replaced, never followed
        assert not (tmp_path / "target").exists() and (tmp_path / "l").read_bytes() == b"z"
    finally:
        os.close(fd)
    assert not [p for p in tmp_path.iterdir() if atomic.is_private_name(p)]


# -- vault ---------------------------------------------------------------------------------------
def test_vault_put_checks_the_copy_it_wrote(tmp_path, monkeypatch):
    v = Vault(tmp_path / "v")
    src = tmp_path / "a"
    src.write_bytes(b"original")
    sha = hashlib.sha256(b"original").hexdigest()
    real = atomic.write_bytes

    def bad_disk(path, data, **kw):
        return real(path, data[:-1] + b"X", **kw)

    monkeypatch.setattr(atomic, "write_bytes", bad_disk)
    with pytest.raises(VaultError):
        v.put(src, sha)
    assert not v.object_path(sha).exists()


def test_vault_check_rehashes_and_refuses_links(tmp_path):
    v = Vault(tmp_path / "v")
    src = tmp_path / "a"
    src.write_bytes(b"original")
    sha = hashlib.sha256(b"original").hexdigest()
    p = v.put(src, sha)
    assert v.check(sha) and v.get(sha) == p
    os.chmod(p, 0o644)
    p.write_bytes(b"originaX")  # same size, one byte off
    assert not v.check(sha)
    p.unlink()
    p.symlink_to(src)  # a link to a file with the right bytes is still not a vault copy
    assert not v.check(sha) and v.get(sha) is None
    assert not v.check("f" * 64)


def test_vault_put_of_changed_content_is_refused(tmp_path):
    v = Vault(tmp_path / "v")
    src = tmp_path / "a"
    src.write_bytes(b"changed")
    with pytest.raises(VaultError):
        v.put(src, hashlib.sha256(b"original").hexdigest())


def test_vault_expire_keeps_what_it_is_told_and_what_has_no_end(tmp_path):
    import datetime as dt

    v = Vault(tmp_path / "v")
    now = dt.datetime(2030, 1, 1)
    shas = []
    for i, exp in enumerate([now - dt.timedelta(days=1), now - dt.timedelta(days=1), now + dt.timedelta(days=1), None]):
        f = tmp_path / f"f{i}"
        f.write_bytes(bytes([i]) * 10)
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        v.put(f, sha, expires_at=exp)
        shas.append(sha)
    gone = v.expire(now, keep=[shas[1]])
    assert gone == [shas[0]] and not v.object_path(shas[0]).exists()
    assert all(v.check(s) for s in shas[1:])



@pytest.mark.parametrize("harm", ["none", "damaged"])
def test_a_rollback_says_what_it_removed(tmp_path, harm):
    """The rollback's note (and event) says whether the artifact it removed was whole or damaged."""
    from archiver.work.recovery import recover

    ctx = make_context(tmp_path / "state")
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    o = archive_file(src, ctx)
    cp = Path(o.compressed_path)
    with ctx.catalog.session() as s:
        r = q.latest_version(s, str(src))
        r.state, r.original_status = "verified", None
    src.write_bytes(b"placeholder")
    if harm == "damaged":
        cp.write_bytes(cp.read_bytes()[:-3])
    note = recover(src, ctx)
    word = "damaged" if harm == "damaged" else "unfinished"
    assert f"removed {word} {cp.name}" in note and not cp.exists()
    ctx.catalog.close()


def test_a_rollback_finishes_an_artifact_left_taken(tmp_path):
    """A run killed while it removed its own compressed file left it under the private name:
    the rollback drops it (it was ours), and nothing private is left."""
    from archiver.work.recovery import recover

    ctx = make_context(tmp_path / "state")
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    o = archive_file(src, ctx)
    cp = Path(o.compressed_path)
    with ctx.catalog.session() as s:
        r = q.latest_version(s, str(src))
        r.state, r.original_status = "verified", None
        fid = r.id
    src.write_bytes(b"placeholder")
    os.rename(cp, files.taken_path(cp, fid))
    recover(src, ctx)
    assert not [p for p in cp.parent.iterdir() if atomic.is_private_name(p)]
    decoy = files.taken_path(cp, fid)
    decoy.symlink_to(tmp_path / "elsewhere")  # a link under that name is not ours to drop
    from archiver.work.recovery import _finish_taken_artifact

    _finish_taken_artifact(cp, fid)
    assert decoy.is_symlink()
    ctx.catalog.close()


# -- mutation survivors of the first bench run: each check, tested on its own ----------------------
def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_descriptor_is_left_open(tmp_path):
    """Every primitive closes what it opened, also on its refusals (a long daemon run would run out)."""
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    link = tmp_path / "l"
    link.symlink_to(f)
    before = _open_fds()
    for _ in range(3):
        atomic.fsync_dir(tmp_path)
        files.read_original(f)
        for bad in (fifo, link):
            with pytest.raises(OSError):
                files.read_original(bad)
        files.open_for_writing(f)
        files.differs(f, files.Identity(hashlib.sha256(b"abc").hexdigest()))
        files.differs(f, files.Identity("0" * 64))
        os.close(atomic.open_dir_nofollow(tmp_path / "a" / "b", create=True))
    assert _open_fds() == before


def test_read_original_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "p.jpg"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as e:
        files.read_original(fifo)  # never blocks: O_NONBLOCK, then refused
    assert e.value.errno == errno.EINVAL
    (tmp_path / "real.jpg").write_bytes(b"x")
    (tmp_path / "l.jpg").symlink_to(tmp_path / "real.jpg")
    with pytest.raises(OSError):
        files.read_original(tmp_path / "l.jpg")
    data, st = files.read_original(tmp_path / "real.jpg")
    assert data == b"x" and st.st_size == 1


def test_open_for_writing_without_leases_searches_proc(tmp_path, monkeypatch):
    """Where the kernel refuses a lease for another reason (a filesystem without leases, a file
    someone else owns), the writers are found in /proc instead; without fcntl, none are assumed."""
    import fcntl

    f = tmp_path / "f"
    f.write_bytes(b"x")
    assert not files.open_for_writing(tmp_path / "missing")
    real = fcntl.fcntl

    def no_leases(fd, cmd, *a):
        if cmd == fcntl.F_SETLEASE:
            raise OSError(errno.EINVAL, "leases not supported here")
        return real(fd, cmd, *a)

    monkeypatch.setattr(fcntl, "fcntl", no_leases)
    assert not files.open_for_writing(f)
    import subprocess
    import sys

    writer = subprocess.Popen([sys.executable, "-c", f"import sys, time; fh = open({str(f)!r}, 'r+b'); "
                               "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        assert files.open_for_writing(f)  # found in /proc/<pid>/fdinfo
        assert files.differs(f, files.Identity(hashlib.sha256(b"x").hexdigest()))[0] == files.WRITTEN_TO
    finally:
        writer.kill()
        writer.wait()
    assert not files.open_for_writing(f)
    monkeypatch.setattr(fcntl, "F_SETLEASE", None, raising=False)
    monkeypatch.delattr(fcntl, "F_SETLEASE")
    with open(f, "r+b"):
        assert files.open_for_writing(f) is False  # not Linux: nothing to ask


def test_give_back_durably_and_stays_private_when_every_name_is_taken(tmp_path, monkeypatch):
    taken, path, conflict = tmp_path / ".t", tmp_path / "a.png", tmp_path / "a.kept.png"
    taken.write_bytes(b"old")
    synced = _fsyncs(monkeypatch)
    assert files.give_back(taken, path, conflict) == path and str(tmp_path) in synced
    for p in [path, conflict] + [conflict.with_name(f"a.kept-{n}.png") for n in range(2, 100)]:
        p.write_bytes(b"someone's")
    taken.write_bytes(b"old2")
    assert files.give_back(taken, path, conflict) == taken and taken.read_bytes() == b"old2"


def test_remove_own_says_where_a_file_it_did_not_write_is(tmp_path, monkeypatch):
    f = tmp_path / "a.jpg.jxl"
    f.write_bytes(b"theirs")
    why = files.remove_own(f, 1, hashlib.sha256(b"ours").hexdigest())
    assert why.endswith("left in place") and f.read_bytes() == b"theirs"
    real = files.take

    def take_then_name_reused(path, taken):
        real(path, taken)
        path.write_bytes(b"new")

    monkeypatch.setattr(files, "take", take_then_name_reused)
    why = files.remove_own(f, 1, hashlib.sha256(b"ours").hexdigest())
    kept = files.conflict_path(f, 1)
    assert why.endswith(f"as {kept}") and kept.read_bytes() == b"theirs" and f.read_bytes() == b"new"


def test_write_bytes_flushes_before_fsync_and_applies_mode_and_owner(tmp_path, monkeypatch):
    sizes = _fsync_sizes(monkeypatch)
    data = b"x" * 100  # small: it stays in Python's buffer unless flushed (a large write goes straight through)
    atomic.write_bytes(str(tmp_path / "a"), data, mode=0o640, owner=(os.geteuid(), os.getegid()))
    assert data.__len__() in sizes  # the data reached the file before it was synced
    assert oct(os.stat(tmp_path / "a").st_mode & 0o777) == oct(0o640)
    if os.geteuid() == 0:
        atomic.write_bytes(tmp_path / "b", b"y", owner=(4321, 4321))
        st = os.stat(tmp_path / "b")
        assert (st.st_uid, st.st_gid) == (4321, 4321)
    atomic.write_bytes(tmp_path / "c", b"z", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"] if os.geteuid() == 0 else True
    assert not [p for p in tmp_path.iterdir() if atomic.is_temp_name(p)]


def test_open_dir_nofollow_syncs_what_it_made_and_closes_on_refusal(tmp_path, monkeypatch):
    synced = _fsyncs(monkeypatch)
    os.close(atomic.open_dir_nofollow(tmp_path / "new" / "deeper", create=True))
    assert str(tmp_path) in synced and str(tmp_path / "new") in synced  # each new entry made durable
    (tmp_path / "link").symlink_to(tmp_path / "new")
    before = _open_fds()
    for _ in range(3):
        with pytest.raises(OSError):
            atomic.open_dir_nofollow(tmp_path / "link" / "deeper")
    assert _open_fds() == before


def test_write_in_dir_syncs_the_data_gives_0644_and_closes(tmp_path, monkeypatch):
    sizes = _fsync_sizes(monkeypatch)
    d = atomic.open_dir_nofollow(tmp_path)
    try:
        before = _open_fds()
        for i in range(3):
            atomic.write_in_dir(d, f"f{i}", b"abc", overwrite=False)
        assert _open_fds() == before
    finally:
        os.close(d)
    assert 3 in sizes
    assert oct(os.stat(tmp_path / "f0").st_mode & 0o777) == oct(0o644)  # readable like any restored file


def test_open_dir_nofollow_needs_an_absolute_path_and_creates_only_when_asked(tmp_path):
    with pytest.raises(ValueError):
        atomic.open_dir_nofollow("relative/dir")
    with pytest.raises(FileNotFoundError):
        atomic.open_dir_nofollow(str(tmp_path / "missing" / "deeper"))
    assert not (tmp_path / "missing").exists()
    os.close(atomic.open_dir_nofollow(str(tmp_path / "made"), create=True))
    assert (tmp_path / "made").is_dir()


# -- the vault, branch by branch -----------------------------------------------------------------
def _vault_with(tmp_path, content=b"original", **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    v = Vault(tmp_path / "v")
    src = tmp_path / "src"
    src.write_bytes(content)
    sha = hashlib.sha256(content).hexdigest()
    return v, src, sha, v.put(src, sha, **kw)


def test_vault_put_makes_each_new_folder_durable(tmp_path, monkeypatch):
    synced = _fsyncs(monkeypatch)
    v, src, sha, p = _vault_with(tmp_path)
    for d in (tmp_path, tmp_path / "v", tmp_path / "v" / "objects"):  # each new folder's entry in its parent
        assert str(d) in synced
    assert str(p.parent) in synced  # and the object's own directory entry


def test_vault_put_of_a_held_object_writes_nothing(tmp_path, monkeypatch):
    v, src, sha, p = _vault_with(tmp_path)
    writes = []
    real = atomic.write_bytes
    monkeypatch.setattr(atomic, "write_bytes", lambda path, data, **kw: (writes.append(Path(path)), real(path, data, **kw))[1])
    assert v.put(src, sha) == p
    assert writes == [v._meta_path(sha)]  # only the expiry/sources record, never the object again


def test_vault_put_says_the_content_changed_and_writes_nothing(tmp_path):
    v = Vault(tmp_path / "v")
    src = tmp_path / "src"
    src.write_bytes(b"changed")
    sha = hashlib.sha256(b"original").hexdigest()
    with pytest.raises(VaultError, match="content changed"):
        v.put(src, sha)
    assert not v.object_path(sha).exists() and not (tmp_path / "v" / "objects").exists()


def test_vault_records_each_source_once_and_the_latest_expiry(tmp_path):
    import datetime as dt

    t0 = dt.datetime(2030, 1, 1)
    v, src, sha, p = _vault_with(tmp_path, source_path="/a.jpg", expires_at=t0)
    v.put(src, sha, source_path="/a.jpg", expires_at=t0 - dt.timedelta(days=1))
    v.put(src, sha, source_path="/b.jpg", expires_at=t0 + dt.timedelta(days=1))
    m = v.meta(sha)
    assert m["sources"] == ["/a.jpg", "/b.jpg"] and m["expires_at"] == (t0 + dt.timedelta(days=1)).isoformat()
    v.put(src, sha)  # no expiry: kept forever from now on
    assert v.meta(sha)["expires_at"] is None


def test_an_unreadable_vault_object_is_an_error_not_damage(tmp_path, monkeypatch):
    from archiver.storage import vault as vault_mod
    from archiver.storage.vault import VaultDamaged

    v, src, sha, p = _vault_with(tmp_path)

    def eio(*a, **kw):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(vault_mod, "open_regular_below", eio)
    with pytest.raises(VaultError) as e:
        v.read_verified(sha)
    assert not isinstance(e.value, VaultDamaged) and "unreadable (Input/output error)" in str(e.value)
    assert not v.check(sha) and v.get(sha) is None


def test_vault_objects_and_expiry_housekeeping(tmp_path, monkeypatch):
    import datetime as dt

    assert list(Vault(tmp_path / "empty").objects()) == []
    v, src, sha, p = _vault_with(tmp_path, expires_at=dt.datetime(2020, 1, 1))
    (p.parent / ".archiver-tmp-x.part").write_bytes(b"leftover")
    assert list(v.objects()) == [sha]
    synced = _fsyncs(monkeypatch)
    assert v.expire(dt.datetime(2021, 1, 1), keep=iter([])) == [sha]
    assert not p.exists() and not v._meta_path(sha).exists() and str(p.parent) in synced
    # an object that vanishes between the listing and its removal: its record still goes, no error
    v, src, sha, p = _vault_with(tmp_path / "x", content=b"other", expires_at=dt.datetime(2020, 1, 1))
    real = os.lstat

    def vanish(path, *a, **kw):
        if Path(path) == p and p.exists():
            os.chmod(p, 0o644)
            p.unlink()
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "lstat", vanish)
    assert v.expire(dt.datetime(2021, 1, 1)) == [sha] and not v._meta_path(sha).exists()
