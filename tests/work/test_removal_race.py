"""F1 (issue 22): a user's file written at the original's name while archiver removes the
original is never deleted. The removal takes the original out of the user's name first (one
atomic rename) and removes only what it took, after comparing it with what was archived.

Each race is placed at a known point through the fault hook (``taking``: every slow check done,
the original about to be taken; ``taken``: taken, not yet compared), and once with a real second
thread that renames new files over the original while archive runs, as the adversarial run did."""

import io
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
from PIL import Image

from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED, ORIG_PRESENT, ORIG_REMOVED
from archiver.testing.catalog import disk_problems, make_context, write_jpeg, write_png
from archiver.storage.atomic import TAKEN_PREFIX
from archiver.work import archive_file, faults, recover_pending, restore, verify
from archiver.work.files import taken_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faultcorpus import Crash  # noqa: E402  (tests/faultcorpus.py)


def _at(step, action):
    """Run ``action`` once when the unit of work reaches ``step``."""
    done = []

    def fault(name):
        if name == step and not done:
            done.append(name)
            action()

    return mock.patch.object(faults, "fault", fault)


def _events(ctx, src):
    with ctx.catalog.session() as s:
        r = q.latest_version(s, str(src))
        return r, [e.kind for e in q.events_for(s, r)]


def _rename_over(src: Path, seed: int) -> bytes:
    """What a photo editor's 'save' does: write a new file, rename it over the old name."""
    tmp = src.with_name(f"edit-{seed}.tmp")
    write_png(tmp, seed=seed, size=(320, 240))
    data = tmp.read_bytes()
    os.rename(tmp, src)
    return data


def _rewrite_in_place(src: Path, keep_mtime: bool) -> bytes:
    """Same inode, new content (optionally with the old size-preserving mtime put back)."""
    st = os.stat(src)
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size
    with open(src, "r+b") as f:
        f.write(bytes(data))
    if keep_mtime:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    return bytes(data)


@pytest.fixture
def png(tmp_path):
    return write_png(tmp_path / "c" / "png" / "photo.png", seed=3, size=(320, 240))


def _no_taken_left(src):
    assert not [p for p in src.parent.iterdir() if p.name.startswith(TAKEN_PREFIX)]


def test_file_renamed_over_after_the_checks_is_never_deleted(tmp_path, png):
    """The adversarial run's F1: the new file lands after every check and before the removal."""
    ctx = make_context(tmp_path / "state")
    new = []
    with _at("taking", lambda: new.append(_rename_over(png, seed=9))):
        o = archive_file(png, ctx)
    assert png.read_bytes() == new[0]  # the user's newer file is there, untouched
    row, kinds = _events(ctx, png)
    assert o.state == COMMITTED and "original_changed" in kinds and row.original_status == ORIG_REMOVED
    _no_taken_left(png)
    assert archive_file(png, ctx).state == COMMITTED  # the new content is archived as a new version
    assert not png.exists()
    assert verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs).mismatches == []
    ctx.catalog.close()


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["mtime-moved", "mtime-put-back"])
def test_file_rewritten_in_place_after_the_checks_is_never_deleted(tmp_path, png, keep_mtime):
    """Same inode and size, new bytes (with the mtime put back only the SHA-256 of what was taken
    can tell): given back under its name."""
    ctx = make_context(tmp_path / "state")
    new = []
    with _at("taking", lambda: new.append(_rewrite_in_place(png, keep_mtime))):
        archive_file(png, ctx)
    assert png.read_bytes() == new[0]
    row, kinds = _events(ctx, png)
    assert "original_changed" in kinds and "original_removed" not in kinds
    assert "content changed" in row.error or "modification time" in row.error
    _no_taken_left(png)
    ctx.catalog.close()


def test_writer_that_opened_the_file_after_the_checks_keeps_it(tmp_path, png):
    """A process opens the original for writing after the checks: what was taken is given back
    and the removal is retried on a later run."""
    ctx = make_context(tmp_path / "state")
    held = []
    with _at("taking", lambda: held.append(open(png, "r+b"))):
        o = archive_file(png, ctx)
    try:
        assert png.exists()
        row, kinds = _events(ctx, png)
        assert o.state == COMMITTED and row.original_status == ORIG_PRESENT and "dispose_failed" in kinds
        assert "open for writing" in row.error
    finally:
        held[0].close()
    _no_taken_left(png)
    recover_pending(ctx)  # the writer is gone: the next run finishes the removal
    assert not png.exists() and _events(ctx, png)[0].original_status == ORIG_REMOVED
    ctx.catalog.close()


def test_symlink_put_in_place_after_the_checks_is_given_back(tmp_path, png):
    ctx = make_context(tmp_path / "state")
    target = tmp_path / "elsewhere.png"
    target.write_bytes(png.read_bytes())

    def swap():
        png.unlink()
        png.symlink_to(target)

    with _at("taking", swap):
        archive_file(png, ctx)
    assert png.is_symlink() and target.exists()
    assert "original_changed" in _events(ctx, png)[1]
    ctx.catalog.close()


def test_new_file_at_the_name_after_taking_is_untouched(tmp_path, png):
    """Once taken, the user's name is free: a file written there is a new file. The archived
    original (what was taken) is removed; the new file stays."""
    ctx = make_context(tmp_path / "state")
    new = []
    with _at("taken", lambda: new.append(_rename_over(png, seed=11))):
        archive_file(png, ctx)
    assert png.read_bytes() == new[0]
    row, kinds = _events(ctx, png)
    assert "original_removed" in kinds and row.original_status == ORIG_REMOVED
    _no_taken_left(png)
    ctx.catalog.close()


def test_changed_and_name_written_again_is_kept_beside(tmp_path, png):
    """What was taken differs from what was archived, and meanwhile a new file took the name: both
    are kept, the taken one under a conflict name, with an event saying where."""
    ctx = make_context(tmp_path / "state")
    row0 = {}

    def both():
        taken = taken_path(png, _events(ctx, png)[0].id)
        row0["changed"] = _rewrite_in_place(taken, keep_mtime=True)
        row0["new"] = _rename_over(png, seed=12)

    with _at("taken", both):
        archive_file(png, ctx)
    assert png.read_bytes() == row0["new"]
    row, kinds = _events(ctx, png)
    kept = png.with_name(f"photo.archiver-kept-{row.id}.png")
    assert kept.read_bytes() == row0["changed"]
    assert "original_kept_beside" in kinds and str(kept) in row.error
    _no_taken_left(png)
    ctx.catalog.close()


@pytest.mark.parametrize("then", ["nothing", "changed", "name-reused", "artifact-lost"])
def test_crash_after_taking_is_finished_by_recovery(tmp_path, png, then):
    """A kill between taking and removing leaves the original under its private name; recovery
    finishes it through the same comparison (and the replacement is checked again)."""
    ctx = make_context(tmp_path / "state")
    orig = png.read_bytes()

    def die():
        raise Crash("taken")

    with _at("taken", die):
        try:
            archive_file(png, ctx)
        except Crash:
            pass
    row = _events(ctx, png)[0]
    taken = taken_path(png, row.id)
    assert taken.read_bytes() == orig and not png.exists()
    if then == "changed":  # written in place (same inode) while it waited
        changed = write_png(taken, seed=14, size=(320, 240)).read_bytes()
    elif then == "name-reused":
        new = _rename_over(png, seed=13)
    elif then == "artifact-lost":
        Path(row.compressed_path).unlink()
    recover_pending(ctx)
    _no_taken_left(png)
    row, kinds = _events(ctx, png)
    if then == "nothing":
        assert not png.exists() and row.original_status == ORIG_REMOVED
        res = restore(ctx.catalog, [str(png)], vault=ctx.vault, codecs=ctx.codecs, to=tmp_path / "back")
        assert res[0].status == "restored"
    elif then == "changed":
        assert png.read_bytes() == changed and "original_changed" in kinds
    elif then == "name-reused":  # what was taken is the archived file: removed; the new file stays
        assert png.read_bytes() == new and "original_removed" in kinds
    else:
        assert png.read_bytes() == orig and "replacement_lost" in kinds
    assert archive_file(png, ctx).state in (COMMITTED, "unchanged")  # whatever is at the name now is archived next
    assert disk_problems(ctx, png.parent) == []
    assert verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs).mismatches == []
    ctx.catalog.close()


def test_racing_writer_thread_never_loses_a_file(tmp_path):
    """The issue's repro with a real second thread: as soon as the catalog shows the commit, the
    user saves a new file over the original (rename-over) while archive is still busy removing
    it. The newer file must survive every trial (under its name, or kept beside it), and the
    archived original must restore."""
    lost = []
    for trial in range(8):
        src = write_png(tmp_path / f"t{trial}" / "png" / "photo.png", seed=trial, size=(320, 240))
        orig = src.read_bytes()
        state = tmp_path / f"state{trial}"
        ctx = make_context(state)
        prepared = src.with_name("prepared.tmp")
        write_png(prepared, seed=100 + trial, size=(320, 240))
        newer = prepared.read_bytes()
        stop = threading.Event()

        def racer():
            db = sqlite3.connect(state / "catalog.sqlite", timeout=30)
            try:
                while not stop.is_set():
                    if db.execute("select count(*) from events where kind='committed'").fetchone()[0]:
                        os.rename(prepared, src)
                        return
                    time.sleep(0.0002)
            finally:
                db.close()

        t = threading.Thread(target=racer)
        t.start()
        archive_file(src, ctx)
        stop.set()
        t.join()
        kept = [p.read_bytes() for p in src.parent.iterdir() if p.is_file()]
        if not prepared.exists() and newer not in kept:
            lost.append(trial)
        res = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs, to=tmp_path / f"back{trial}")
        assert res[0].status == "restored"
        assert Image.open(res[0].dest).tobytes() == Image.open(io.BytesIO(orig)).tobytes()
        ctx.catalog.close()
    assert lost == []


def test_jpeg_replace_race_keeps_the_newer_file(tmp_path):
    """The same race on a byte-exact JPEG file."""
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg", seed=4)
    ctx = make_context(tmp_path / "state")
    new = []

    def save():
        tmp = src.with_name("x.tmp")
        write_jpeg(tmp, seed=44)
        new.append(tmp.read_bytes())
        os.rename(tmp, src)

    with _at("taking", save):
        archive_file(src, ctx)
    assert src.read_bytes() == new[0]
    ctx.catalog.close()


# -- the race corpus (tests/faultcorpus.py; bench/fuzz_faults.py runs it longer, with kills) ----
import faultcorpus  # noqa: E402

RACE_CASES = faultcorpus.race_cases()


@pytest.mark.parametrize("kind,point,race", RACE_CASES, ids=[f"{k}-{p}-{r}" for k, p, r in RACE_CASES])
def test_race_corpus(tmp_path, kind, point, race):
    """Every kind of file × where the race happens × what the user does: neither the original
    nor the user's newest file is ever lost, and nothing is left under a private name."""
    r = faultcorpus.race_trial(tmp_path, kind, point, race)
    assert r["raced"] and not r["lost"], r


@pytest.mark.parametrize("race", faultcorpus.RACES)
def test_race_after_a_kill_between_taking_and_removing(tmp_path, race):
    """A real kill -9 right after the original was taken; the user then changes the name; the next
    run finishes the removal without losing either file."""
    r = faultcorpus.race_trial(tmp_path, "png", "taken", race, kill=True)
    assert r["raced"] and not r["lost"], r
