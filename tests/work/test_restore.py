"""restore: best source first, never overwrite without force, never escape the target dir, --as-of."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.work import archive_file
from archiver.catalog import queries as q
from archiver.catalog.models import FileVersion
from archiver.work.restore import destination, parse_time, restore
from archiver.testing.catalog import make_context, make_policy, write_jpeg
from archiver.errors import CatalogError, NotInCatalogError, SafetyError


def test_never_overwrites_without_force(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = src.read_bytes()
    archive_file(src, ctx)
    src.write_bytes(b"somebody else's file")
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault)
    assert r.status == "refused" and src.read_bytes() == b"somebody else's file"
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, force=True)
    assert r.status == "restored" and src.read_bytes() == orig
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault)
    assert r.status == "present"  # the identical file is already there: nothing to do


def test_glob_id_and_mtime(tmp_path, ctx):
    a = write_jpeg(tmp_path / "c" / "plain" / "a.jpg", seed=1)
    b = write_jpeg(tmp_path / "c" / "plain" / "sub" / "b.jpg", seed=2)
    os.utime(a, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    ctx.root = str(tmp_path / "c" / "plain")  # as `archiver archive DIR` sets it
    archive_file(a, ctx), archive_file(b, ctx)
    out = tmp_path / "out"
    res = restore(ctx.catalog, [str(tmp_path / "c" / "plain" / "*")], vault=ctx.vault, to=out)
    # the policy's glob meaning: '*' stays within the directory, '**' crosses into sub-directories
    assert sorted(Path(r.dest).relative_to(out).as_posix() for r in res) == ["a.jpg"]
    res = restore(ctx.catalog, [str(tmp_path / "c" / "plain" / "**")], vault=ctx.vault, to=out, force=True)
    assert sorted(Path(r.dest).relative_to(out).as_posix() for r in res) == ["a.jpg", "sub/b.jpg"]
    assert [r.dest for r in restore(ctx.catalog, [str(tmp_path / "c" / "**" / "b.jpg")], vault=ctx.vault,
                                    to=tmp_path / "outb")] == [str(tmp_path / "outb" / "sub" / "b.jpg")]
    assert os.stat(out / "a.jpg").st_mtime_ns == 1_600_000_000_000_000_000
    with ctx.catalog.session() as s:
        fid = q.latest_version(s, str(b)).id
    res = restore(ctx.catalog, [str(fid)], vault=ctx.vault, to=tmp_path / "out2")
    assert len(res) == 1 and Path(res[0].dest).name == "b.jpg"
    res = restore(ctx.catalog, [str(tmp_path / "c" / "plain")], vault=ctx.vault, to=tmp_path / "out3")  # a directory
    assert len(res) == 2
    with pytest.raises(NotInCatalogError):
        restore(ctx.catalog, ["/nothing/like/this/*.png"], vault=ctx.vault)


def test_as_of_picks_the_older_version(tmp_path):
    clock = {"t": dt.datetime(2026, 1, 1, 12, 0)}
    ctx = make_context(tmp_path / "state", now=lambda: clock["t"])
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg", seed=1)
    v1 = src.read_bytes()
    archive_file(src, ctx)
    clock["t"] = dt.datetime(2026, 2, 1, 12, 0)
    write_jpeg(src, seed=5)
    v2 = src.read_bytes()
    archive_file(src, ctx)
    out = tmp_path / "out"
    restore(ctx.catalog, [str(src)], vault=ctx.vault, to=out, as_of=parse_time("2026-01-15"))
    assert (out / "a.jpg").read_bytes() == v1
    restore(ctx.catalog, [str(src)], vault=ctx.vault, to=out, force=True)
    assert (out / "a.jpg").read_bytes() == v2
    with pytest.raises(CatalogError):
        restore(ctx.catalog, [str(src)], vault=ctx.vault, to=out, as_of=parse_time("2025-12-31T23:00:00+00:00"))
    ctx.catalog.close()


def test_path_traversal_refused(tmp_path):
    base = tmp_path / "out"
    base.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (base / "sub").symlink_to(outside)  # a symlink inside the target pointing out of it
    evil = [FileVersion(path=str(tmp_path / "c" / "sub" / "a.jpg"), root=str(tmp_path / "c")),
            FileVersion(path="/x/..", root=None)]
    for row in evil:
        with pytest.raises(SafetyError):
            destination(row, base)
    ok = FileVersion(path="/data/c/../../etc/passwd", root="/data/c")  # escapes its root: basename only
    assert destination(ok, base) == base / "passwd"


def test_cli_restore_exit_codes_and_json(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"catalog_url: sqlite:///{tmp_path / 'cat.sqlite'}\nvault_dir: {tmp_path / 'vault'}\n")
    make_policy(tmp_path / "p.yaml")
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = src.read_bytes()
    env = dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home"))
    run = lambda *a: subprocess.run([sys.executable, "-m", "archiver", *a, "--config", str(cfg)],
                                    capture_output=True, text=True, timeout=300, env=env)
    assert run("archive", str(src), "--policy", str(tmp_path / "p.yaml")).returncode == 0
    src.write_bytes(b"x")
    r = run("restore", str(src), "--json")
    assert r.returncode == 9 and json.loads(r.stdout)["results"][0]["status"] == "refused"
    r = run("restore", str(src), "--force")
    assert r.returncode == 0 and src.read_bytes() == orig and "restored" in r.stdout
    r = run("restore", "/no/such/file.jpg")
    assert r.returncode == 11 and "Traceback" not in r.stderr


def test_permissions_kept_on_compressed_file_and_restore(tmp_path, ctx):
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    os.chmod(src, 0o640)
    o = archive_file(src, ctx)
    assert os.stat(o.compressed_path).st_mode & 0o777 == 0o640
    out = tmp_path / "out"
    restore(ctx.catalog, [str(src)], vault=ctx.vault, to=out)
    assert os.stat(out / "a.jpg").st_mode & 0o777 == 0o640


def test_restored_original_is_not_archived_again(tmp_path, ctx):
    """Restoring in place brings the original back for good: a rerun (or the daemon) leaves it."""
    from archiver.work.verify import verify

    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = src.read_bytes()
    archive_file(src, ctx)
    restore(ctx.catalog, [str(src)], vault=ctx.vault)
    o = archive_file(src, ctx)
    assert o.state == "unchanged" and src.read_bytes() == orig
    assert verify(ctx.catalog, vault=ctx.vault).mismatches == []
    with ctx.catalog.session() as s:
        assert len(q.versions(s, str(src))) == 1


def test_an_approximate_restore_is_marked_and_keeps_the_original_mtime(tmp_path, ctx):
    """A diffusion reconstruction says what it is (XMP and EXIF), carries the original's mtime,
    and with a suffix cannot be mistaken for the original by its name either."""
    from PIL import Image

    from archiver.testing.catalog import write_jpeg as wj
    from archiver.work import archive_file as af

    src = wj(tmp_path / "c" / "tex" / "a.jpg", size=(160, 120))
    os.utime(src, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    assert af(src, ctx).action == "diffusion"
    out = tmp_path / "out"
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs, to=out)
    assert (r.source, r.exact, r.status) == ("reconstruction", "approx", "restored") and "marked" in r.message
    got = out / "a.jpg"
    assert os.stat(got).st_mtime_ns == 1_500_000_000_000_000_000
    with Image.open(got) as im:
        xmp = im.info.get("xmp", b"")
        desc = im.getexif().get(0x010E, "")
    assert b'archiver:reconstruction="approximate"' in xmp and b"Approximate reconstruction by archiver" in xmp
    assert desc.startswith("Approximate reconstruction by archiver of a.jpg")
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs, to=out, lossy_suffix=".reconstructed")
    assert r.dest == str(out / "a.reconstructed.jpg") and (out / "a.reconstructed.jpg").is_file()
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs, to=out, lossy_suffix=".reconstructed")
    assert r.status == "refused"  # the suffixed name is not overwritten either without force


# -- issue 11 findings -------------------------------------------------------------------------
def test_exact_path_with_glob_characters(tmp_path, ctx):
    """#19: restore by exact path failed for names containing [ ] * ?."""
    src = write_jpeg(tmp_path / "c" / "plain" / "a[1]*?.jpg")
    orig = src.read_bytes()
    archive_file(src, ctx)
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault)
    assert r.status == "restored" and src.read_bytes() == orig


def test_pixel_exact_in_place_restore_is_not_archived_again(tmp_path, ctx):
    """#20: an in-place restore that is only pixel-exact was archived again (x.png.3.axl)."""
    import io

    from PIL import Image

    from archiver.testing.catalog import smooth_image

    src = tmp_path / "c" / "plain" / "x.png"
    src.parent.mkdir(parents=True)
    b = io.BytesIO()
    Image.fromarray(smooth_image(1, (160, 120)) // 16 * 16).save(b, "PNG", compress_level=1)
    src.write_bytes(b.getvalue())
    mtime = os.stat(src).st_mtime_ns
    assert archive_file(src, ctx).state == "committed" and not src.exists()
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault)
    assert r.status == "restored" and r.exact == "pixels" and src.read_bytes() != b.getvalue()
    assert os.stat(src).st_mtime_ns == mtime  # #22: mtime kept on pixel-exact restores too
    o = archive_file(src, ctx)
    assert o.state == "unchanged" and sorted(p.name for p in src.parent.iterdir()) == ["x.png", "x.png.jxl"]


def test_diffusion_restore_keeps_mtime(tmp_path, ctx):
    """#22: mtime was lost on diffusion restores."""
    src = write_jpeg(tmp_path / "c" / "tex" / "a.jpg", size=(160, 120))
    mtime = os.stat(src).st_mtime_ns
    archive_file(src, ctx)
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs, to=tmp_path / "out")
    assert r.source == "reconstruction" and os.stat(tmp_path / "out" / "a.jpg").st_mtime_ns == mtime


def test_symlinked_parent_is_not_followed(tmp_path, ctx):
    """#21: without --to, restore followed a symlinked parent directory out of the tree."""
    src = write_jpeg(tmp_path / "c" / "plain" / "sub" / "a.jpg")
    ctx.root = str(tmp_path / "c")
    archive_file(src, ctx)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "c" / "plain" / "sub" / "a.jpg.jxl").rename(tmp_path / "a.jpg.jxl")
    (tmp_path / "c" / "plain" / "sub").rmdir()
    (tmp_path / "c" / "plain" / "sub").symlink_to(outside)
    (tmp_path / "a.jpg.jxl").rename(outside / "a.jpg.jxl")  # the compressed file is reachable
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault)
    assert r.status == "refused" and "symbolic link" in r.message and not (outside / "a.jpg").exists()


def test_full_or_unwritable_destination_fails_that_file_only(tmp_path, ctx, monkeypatch):
    """#15: restore into a full or immutable --to gave a traceback and abandoned the batch."""
    import errno

    from archiver.storage import atomic

    a = write_jpeg(tmp_path / "c" / "plain" / "a.jpg", seed=1)
    b = write_jpeg(tmp_path / "c" / "plain" / "b.jpg", seed=2)
    ctx.root = str(tmp_path / "c")
    archive_file(a, ctx), archive_file(b, ctx)
    real = atomic.write_in_dir

    def full(dir_fd, name, data, **kw):
        if name == "a.jpg":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(dir_fd, name, data, **kw)

    monkeypatch.setattr(atomic, "write_in_dir", full)
    res = {Path(r.path).name: r for r in restore(ctx.catalog, [str(tmp_path / "c")], vault=ctx.vault, to=tmp_path / "o")}
    assert res["a.jpg"].status == "error" and "No space left" in res["a.jpg"].message
    assert res["b.jpg"].status == "restored"


def test_restore_with_a_read_only_catalog(tmp_path):
    """#15: restore needed a writable catalog."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"catalog_url: sqlite:///{tmp_path / 'db' / 'cat.sqlite'}\nvault_dir: {tmp_path / 'vault'}\n")
    make_policy(tmp_path / "p.yaml")
    src = write_jpeg(tmp_path / "c" / "a.jpg")
    orig = src.read_bytes()
    env = dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home"))
    run = lambda *a: subprocess.run([sys.executable, "-m", "archiver", *a, "--config", str(cfg)],  # noqa: E731
                                    capture_output=True, text=True, timeout=300, env=env)
    assert run("archive", str(src), "--policy", str(tmp_path / "p.yaml")).returncode == 0
    db = tmp_path / "db"
    os.chmod(db / "cat.sqlite", 0o444)
    os.chmod(db, 0o555)
    try:
        r = run("restore", str(src), "--to", str(tmp_path / "out"))
        if os.geteuid() != 0:  # root writes anyway; for others the catalog really is read-only
            assert "could not record" in r.stdout or r.returncode == 0
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "out" / "a.jpg").read_bytes() == orig
    finally:
        os.chmod(db, 0o755)


def test_restore_when_the_catalog_refuses_writes(tmp_path, ctx):
    """#15 in process (the test above cannot make a file read-only for root): every write to the
    catalog fails as on a read-only database; the restore still happens and says so."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = src.read_bytes()
    archive_file(src, ctx)

    def read_only(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise OperationalError(statement, params, Exception("attempt to write a readonly database"))

    event.listen(ctx.catalog.engine, "before_cursor_execute", read_only)
    try:
        (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, to=tmp_path / "out")
    finally:
        event.remove(ctx.catalog.engine, "before_cursor_execute", read_only)
    assert r.status == "restored" and "could not record" in r.message
    assert (tmp_path / "out" / "a.jpg").read_bytes() == orig


def test_png_restore_through_the_catalog_with_another_zlib_build(tmp_path, ctx, monkeypatch):
    """#7: the catalog recorded the hash of re-created PNG bytes, so with another zlib or Pillow
    build (simulated: another deflate level) every such restore and verify was refused. The
    promise is the pixels and metadata, and that is what is checked."""
    from PIL import Image

    from archiver.testing.catalog import write_png
    from archiver.codecs.lossless import format as lossless
    from archiver.work import verify

    src = write_png(tmp_path / "c" / "plain" / "g.png", size=(160, 120))
    orig = src.read_bytes()
    assert archive_file(src, ctx).state == "committed" and not src.exists()
    real = Image.Image.save

    def other_build(self, fp, format=None, **kw):
        return real(self, fp, format, **({**kw, "compress_level": 1} if format == "PNG" else kw))

    monkeypatch.setattr(Image.Image, "save", other_build)
    assert verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs).mismatches == []
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault)
    assert r.status == "restored" and r.exact == "pixels", r
    assert src.read_bytes() != orig and lossless.content_digest(src.read_bytes()) == lossless.content_digest(orig)


def test_a_row_that_is_not_utf8_blocks_nothing(tmp_path, ctx):
    """#16: one catalog row that was not valid UTF-8 blocked restore and verify for every file."""
    import sqlite3

    from archiver.work import verify

    a = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    orig = a.read_bytes()
    archive_file(a, ctx)
    archive_file(write_jpeg(tmp_path / "c" / "plain" / "b.jpg", seed=4), ctx)
    con = sqlite3.connect(tmp_path / "state" / "catalog.sqlite")
    con.execute("UPDATE file_versions SET path = CAST(? AS TEXT) WHERE path LIKE '%b.jpg'",
                (str(tmp_path / "c" / "plain").encode() + b"/b\xe9.jpg",))
    con.commit()
    con.close()
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
    assert rep.checked == 2 and any("not valid UTF-8" in w["problem"] for w in rep.warnings)
    (r,) = restore(ctx.catalog, [str(a)], vault=ctx.vault)
    assert r.status == "restored" and a.read_bytes() == orig


# -- issue 22 findings -------------------------------------------------------------------------
def _archive_tree(tmp_path, ctx, sub="plain"):
    src = write_jpeg(tmp_path / "c" / sub / "a.jpg", seed=3)
    ctx.root = str(tmp_path / "c")
    assert archive_file(src, ctx).original_status == "removed"
    return src


def _relink_root(tmp_path):
    """The archived root is moved away and a symbolic link to another tree put in its place."""
    (tmp_path / "c").rename(tmp_path / "c-moved")
    other = tmp_path / "other"
    (other / "plain").mkdir(parents=True)
    (tmp_path / "c").symlink_to(other)
    return other


@pytest.mark.parametrize("force", [False, True])
def test_root_replaced_by_a_symlink_is_never_written_through(tmp_path, ctx, force):
    """F7: the archived root became a link; restore wrote into the link's target, and with
    --force overwrote a file there."""
    src = _archive_tree(tmp_path, ctx)
    other = _relink_root(tmp_path)
    victim = other / "plain" / "a.jpg"
    victim.write_bytes(b"someone else's file")
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, force=force)
    assert r.status == "refused" and "symbolic link" in r.message
    assert victim.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in (other / "plain").iterdir()) == ["a.jpg"]


def test_rows_without_a_recorded_directory_refuse_a_linked_root(tmp_path, ctx):
    """Rows archived before the resolved directory was recorded: no directory from the root down
    may be a link, the root included."""
    src = _archive_tree(tmp_path, ctx)
    with ctx.catalog.session() as s:
        from archiver.catalog import queries as q

        q.latest_version(s, str(src)).real_parent = None
    other = _relink_root(tmp_path)
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, force=True)
    assert r.status == "refused" and "symbolic link" in r.message and not (other / "plain" / "a.jpg").exists()


def test_a_link_swapped_in_after_the_check_is_not_followed(tmp_path, ctx, monkeypatch):
    """The write walks the directories without following links, so a link put in place between
    the destination check and the write is refused too (no check-then-use window)."""
    import importlib

    restore_mod = importlib.import_module("archiver.work.restore")
    src = _archive_tree(tmp_path, ctx)
    real_open = restore_mod._open_dir
    other = tmp_path / "other"
    (other / "plain").mkdir(parents=True)

    def swap_then_open(directory, create):
        if not (tmp_path / "c").is_symlink():
            (tmp_path / "c").rename(tmp_path / "c-moved")
            (tmp_path / "c").symlink_to(other)
        return real_open(directory, create)

    monkeypatch.setattr(restore_mod, "_open_dir", swap_then_open)
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, force=True)
    assert r.status == "refused" and list((other / "plain").iterdir()) == []


def test_open_dir_nofollow_refuses_every_linked_component(tmp_path):
    import errno as e

    from archiver.storage import atomic

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    os.close(atomic.open_dir_nofollow(tmp_path / "real" / "sub"))
    for linked in (tmp_path / "link", tmp_path / "link" / "sub", tmp_path / "link" / "new"):
        with pytest.raises(OSError) as exc:
            atomic.open_dir_nofollow(linked, create=True)
        assert exc.value.errno in (e.ELOOP, e.ENOTDIR)
    assert not (tmp_path / "real" / "new").exists()
    os.close(atomic.open_dir_nofollow(tmp_path / "real" / "made" / "here", create=True))
    assert (tmp_path / "real" / "made" / "here").is_dir()


@pytest.mark.parametrize("fmt,ext", [("BMP", ".bmp"), ("PPM", ".ppm"), ("GIF", ".gif"), ("TIFF", ".tif"),
                                     ("WEBP", ".webp"), ("PNG", ".png"), ("JPEG", ".jpg")])
def test_an_approximate_restore_is_never_taken_for_the_original(tmp_path, ctx, fmt, ext):
    """F8: lossy restores written as BMP, PPM or GIF carried no mark and took the original's name.
    Every approximate restore is marked inside, or, where its format cannot carry a mark, named
    with the lossy suffix."""
    from PIL import Image

    from archiver.testing.catalog import smooth_image
    from archiver.work.restore import DEFAULT_LOSSY_SUFFIX, is_marked

    src = tmp_path / "c" / "tex" / f"a{ext}"
    src.parent.mkdir(parents=True)
    img = Image.fromarray(smooth_image(5, (96, 64)))
    img.save(src, fmt)
    ctx.root = str(tmp_path / "c")
    assert archive_file(src, ctx).action == "diffusion"
    out = tmp_path / "out"
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, codecs=ctx.codecs, to=out)
    got = Path(r.dest)
    assert r.status == "restored" and r.exact == "approx" and got.is_file()
    if not is_marked(got.read_bytes()):
        assert DEFAULT_LOSSY_SUFFIX in got.name and "cannot carry a mark" in r.message
    assert is_marked(got.read_bytes()) or got.name != src.name
    if fmt in ("BMP", "PPM"):  # these formats have nowhere to put it
        assert got.name == f"a{DEFAULT_LOSSY_SUFFIX}{ext}"
    else:
        assert is_marked(got.read_bytes()) and got.name == src.name


@pytest.mark.parametrize("harm", ["flipped", "link"])
def test_restore_never_gives_back_a_damaged_vault_copy(tmp_path, ctx, harm):
    """F6: the vault was trusted on size alone. A flipped byte, or a same-size link in place of the
    object, is never restored: the exact original comes from the lossless file instead."""
    src = write_jpeg(tmp_path / "c" / "vault" / "a.jpg", seed=8)
    orig = src.read_bytes()
    archive_file(src, ctx)
    with ctx.catalog.session() as s:
        from archiver.catalog import queries as q

        vp = Path(q.latest_version(s, str(src)).vault_path)
    assert vp.is_file() and not src.exists()
    os.chmod(vp, 0o644)
    if harm == "flipped":
        vp.write_bytes(orig[:-1] + bytes([orig[-1] ^ 1]))
    else:
        decoy = tmp_path / "decoy"
        decoy.write_bytes(orig)  # even the right bytes behind a link are not the vault's copy
        vp.unlink()
        vp.symlink_to(decoy)
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, to=tmp_path / "out")
    assert r.status == "restored" and r.source == "lossless" and Path(r.dest).read_bytes() == orig
