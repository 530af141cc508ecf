"""The discover step: what is never read, never touched (issue 11 #3, #14, #17, #18)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.catalog import queries as q
from archiver.catalog.models import COMMITTED, SKIPPED
from archiver.testing.catalog import make_context, write_jpeg
from archiver.work import archive_file, files


def test_a_file_open_for_writing_is_left_alone(tmp_path, ctx):
    """#3: archive/migrate unlinked a file another process was still writing."""
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    writer = subprocess.Popen([sys.executable, "-c", "import sys,time; f=open(sys.argv[1],'ab'); print('open', flush=True); "
                               "time.sleep(60)", str(src)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        assert files.open_for_writing(src)
        o = archive_file(src, ctx)
        assert o.state == SKIPPED and "open for writing" in o.error and src.exists()
        assert sorted(p.name for p in src.parent.iterdir()) == ["a.jpg"]
    finally:
        writer.kill()
        writer.wait()
    assert not files.open_for_writing(src)
    assert archive_file(src, ctx).state == COMMITTED  # once the writer is gone


def test_the_proc_fallback_sees_writers_too(tmp_path):
    src = write_jpeg(tmp_path / "a.jpg")
    with open(src, "ab"):
        st = os.stat(src)
        # this process's own descriptors are not counted: ask from a child
        r = subprocess.run([sys.executable, "-c", f"from archiver.work.files import _writer_in_proc as w; "
                            f"print(w({st.st_dev}, {st.st_ino}))"], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "True"


@pytest.mark.parametrize("dry", [False, True])
def test_a_fifo_named_like_an_image_never_blocks(tmp_path, dry):
    """#17: a FIFO named *.jpg hung classify and archive --dry-run forever."""
    fifo = tmp_path / "c" / "plain" / "pipe.jpg"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    c = make_context(tmp_path / "state", dry_run=dry)
    try:
        o = archive_file(fifo, c)
        assert "not a regular file" in (o.error or "")
    finally:
        c.catalog.close()
    r = subprocess.run([sys.executable, "-m", "archiver", "classify", str(fifo), "--json"], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home")))
    assert "Traceback" not in r.stderr  # and it returned: the timeout did not fire


def test_a_name_that_is_not_utf8_is_skipped_with_a_reason(tmp_path, ctx):
    """#14: a non-UTF-8 name killed archive and migrate with a traceback before any work."""
    d = tmp_path / "c" / "plain"
    write_jpeg(d / "good.jpg")
    bad = os.path.join(os.fsencode(d), b"caf\xe9.jpg")
    with open(bad, "wb") as f:
        f.write((d / "good.jpg").read_bytes())
    o = archive_file(os.fsdecode(bad), ctx)
    assert o.state == SKIPPED and "not valid UTF-8" in o.error and os.path.exists(bad)
    r = subprocess.run([sys.executable, "-m", "archiver", "archive", str(tmp_path / "c"), "--json"], capture_output=True,
                       timeout=300, env=dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home")))
    assert b"Traceback" not in r.stderr and os.path.exists(bad) and not (d / "good.jpg").exists()


@pytest.mark.parametrize("n", [200, 240, 251])
def test_long_names_are_archived(tmp_path, ctx, n):
    """#18: names over about 220 bytes always failed because of the temp-file prefix."""
    name = "é" * ((n - 4) // 2) + "x" * ((n - 4) % 2) + ".jpg"
    assert len(os.fsencode(name)) == n
    src = write_jpeg(tmp_path / "c" / "plain" / name)
    orig = src.read_bytes()
    o = archive_file(src, ctx)
    assert o.state == COMMITTED and not src.exists(), o.error
    assert len(os.fsencode(Path(o.compressed_path).name)) <= 255
    from archiver.work import restore

    assert restore(ctx.catalog, [str(src)], vault=ctx.vault)[0].status == "restored" and src.read_bytes() == orig
    with ctx.catalog.session() as s:
        assert q.latest_version(s, str(src)).compressed_path == o.compressed_path


def test_migrate_skips_a_name_that_is_not_utf8(tmp_path, caplog):
    """#14: migrate died with a traceback before any work; the daemon logged one on every scan."""
    from archiver.service.watcher import is_candidate, walk

    d = tmp_path / "c"
    write_jpeg(d / "good.jpg")
    bad = os.path.join(os.fsencode(d), b"caf\xe9.jpg")
    with open(bad, "wb") as f:
        f.write((d / "good.jpg").read_bytes())
    assert not is_candidate(os.fsdecode(bad))
    with caplog.at_level("WARNING", logger="archiver.service.watcher"):
        for _ in range(3):  # the daemon's scans: the good file each time, one warning in all
            assert list(walk(d)) == [str(d / "good.jpg")]
    assert len([r for r in caplog.records if "not valid UTF-8" in r.getMessage()]) <= 1
    r = subprocess.run([sys.executable, "-m", "archiver", "migrate", str(d), "--executor", "thread", "--json"],
                       capture_output=True, timeout=300, env=dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home")))
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr[-2000:]
    assert os.path.exists(bad) and not (d / "good.jpg").exists()
