"""Previews: settings, where they go, what they look like, and that nothing takes them for
originals (the watcher/migrate walk and ``archiver archive``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from archiver.config import Config
from archiver.errors import UsageError
from archiver.preview import PreviewSettings, is_preview, preview_path, preview_settings, render


def test_settings():
    assert preview_settings(Config()) is None
    ps = preview_settings(Config(preview={"size": 256, "format": "avif"}))
    assert (ps.size, ps.format, ps.where) == (256, "avif", "beside")
    for bad, msg in [({"size": 5}, "preview.size"), ({"format": "gif"}, "preview.format"),
                     ({"where": "mirror"}, "mirror_dir"), ({"sise": 1}, "unknown preview setting"),
                     ({"where": "up"}, "preview.where")]:
        with pytest.raises(UsageError, match=msg):
            preview_settings(Config(preview=bad))
    with pytest.raises(UsageError, match="mapping"):
        preview_settings(Config(preview="yes"))


def test_where_previews_go(tmp_path):
    beside = PreviewSettings()
    assert preview_path(beside, "/p/a/b.jpg", "/p") == Path("/p/a/b.jpg.preview.webp")
    mirror = PreviewSettings(where="mirror", mirror_dir=str(tmp_path / "m"), format="avif")
    assert preview_path(mirror, "/p/a/b.jpg", "/p") == tmp_path / "m" / "a" / "b.jpg.preview.avif"
    assert preview_path(mirror, "/elsewhere/c.png", "/p") == tmp_path / "m" / "c.png.preview.avif"
    for p in (preview_path(beside, "/p/x.png", "/p"), preview_path(mirror, "/p/x.png", "/p")):
        assert is_preview(p)
    assert not is_preview("/p/holiday.webp") and not is_preview("/p/a.preview.jpg")


@pytest.mark.parametrize("fmt,pil", [("webp", "WEBP"), ("avif", "AVIF")])
def test_render_is_a_small_standard_image(fmt, pil):
    img = Image.new("RGB", (2000, 1000), (30, 120, 40))
    data = render(img, PreviewSettings(size=512, format=fmt))
    out = Image.open(io.BytesIO(data))
    assert out.format == pil and out.size == (512, 256)
    assert len(data) < 20_000


def test_previews_are_never_taken_for_originals(tmp_path):
    from archiver.app.commands.archive_cmd import _files
    from archiver.service.watcher import is_candidate, walk

    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "a.jpg.preview.webp").write_bytes(b"x")
    (tmp_path / "b.png.preview.avif").write_bytes(b"x")
    (tmp_path / "c.webp").write_bytes(b"x")  # an ordinary WebP photo still is one
    assert [Path(p).name for p in walk(tmp_path)] == ["a.jpg", "c.webp"]
    assert not is_candidate(tmp_path / "a.jpg.preview.webp")
    assert sorted(f.name for f, _ in _files([tmp_path])) == ["a.jpg", "c.webp"]


# -- the preview step of the unit of work ---------------------------------------------------------
def _ctx(tmp_path, **ps):
    from archiver.testing.catalog import make_context

    ctx = make_context(tmp_path / "state")
    ctx.preview = PreviewSettings(**ps)
    return ctx


def _row(ctx, fid):
    from archiver.catalog.models import FileVersion

    with ctx.catalog.session() as s:
        return s.get(FileVersion, fid)


def test_archive_writes_and_records_a_preview_beside_the_file(tmp_path):
    from archiver.catalog import queries as q
    from archiver.testing.catalog import write_jpeg
    from archiver.work import archive_file

    ctx = _ctx(tmp_path)
    src = write_jpeg(tmp_path / "c" / "photos" / "a.jpg", size=(640, 480))
    kept = write_jpeg(tmp_path / "c" / "keep" / "b.jpg")
    o = archive_file(src, ctx)
    assert (o.state, o.original_status) == ("committed", "removed")
    row = _row(ctx, o.file_id)
    p = Path(row.preview_path)
    assert p == src.with_name("a.jpg.preview.webp") and p.is_file()
    im = Image.open(p)
    assert im.format == "WEBP" and im.size == (512, 384)
    with ctx.catalog.session() as s:
        assert "preview_written" in [e.kind for e in q.events_for(s, row)]
    # the original stays where the policy keeps it: no preview needed, none written
    o2 = archive_file(kept, ctx)
    assert o2.original_status == "kept" and _row(ctx, o2.file_id).preview_path is None
    assert not list(kept.parent.glob("*.preview.*"))
    # the preview is not a new original to archive
    assert archive_file(p, ctx).state == "skipped"


def test_mirror_tree_dry_run_and_failure(tmp_path):
    from archiver.catalog import queries as q
    from archiver.testing.catalog import write_jpeg
    from archiver.work import archive_file

    mirror = tmp_path / "mirror"
    ctx = _ctx(tmp_path, where="mirror", mirror_dir=str(mirror), format="avif", size=128)
    ctx.root = str(tmp_path / "c")
    src = write_jpeg(tmp_path / "c" / "2019" / "a.jpg")
    dry = write_jpeg(tmp_path / "c" / "2019" / "d.jpg", seed=2)
    ctx.dry_run = True
    archive_file(dry, ctx)
    assert not mirror.exists()  # the dry run writes nothing
    ctx.dry_run = False
    o = archive_file(src, ctx)
    assert _row(ctx, o.file_id).preview_path == str(mirror / "2019" / "a.jpg.preview.avif")
    assert Image.open(mirror / "2019" / "a.jpg.preview.avif").format == "AVIF"
    # a preview that cannot be written is an event; the file is archived all the same
    blocked = write_jpeg(tmp_path / "c" / "2020" / "b.jpg", seed=3)
    (mirror / "2020").write_bytes(b"a file where the folder should be")
    o = archive_file(blocked, ctx)
    assert (o.state, o.original_status) == ("committed", "removed")
    row = _row(ctx, o.file_id)
    assert row.preview_path is None
    with ctx.catalog.session() as s:
        assert "preview_failed" in [e.kind for e in q.events_for(s, row)]


def test_restore_in_place_removes_the_preview_restore_elsewhere_keeps_it(tmp_path):
    from archiver.testing.catalog import write_jpeg
    from archiver.work import archive_file, restore

    ctx = _ctx(tmp_path)
    a = write_jpeg(tmp_path / "c" / "a.jpg")
    b = write_jpeg(tmp_path / "c" / "b.jpg", seed=1)
    ia, ib = archive_file(a, ctx).file_id, archive_file(b, ctx).file_id
    pa, pb = Path(_row(ctx, ia).preview_path), Path(_row(ctx, ib).preview_path)
    assert pa.is_file() and pb.is_file()
    (r,) = restore(ctx.catalog, [str(ia)], vault=ctx.vault)
    assert r.status == "restored" and a.is_file()
    assert not pa.exists() and _row(ctx, ia).preview_path is None
    (r,) = restore(ctx.catalog, [str(ib)], vault=ctx.vault, to=tmp_path / "elsewhere")
    assert r.status == "restored" and not b.exists()
    assert pb.is_file() and _row(ctx, ib).preview_path == str(pb)  # the folder still needs its thumbnail


# -- issue 22 F9: never overwrite or delete a file archiver did not write ----------------------
def _events(ctx, fid):
    from archiver.catalog import queries as q

    with ctx.catalog.session() as s:
        return [(e.kind, e.detail) for e in q.events_for(s, _row(ctx, fid))]


def test_a_users_own_preview_named_file_is_never_overwritten_or_deleted(tmp_path):
    """F9: with previews beside, the writer overwrote a user's own X.preview.webp, and an
    in-place restore then deleted it."""
    from archiver.testing.catalog import write_jpeg
    from archiver.work import archive_file, restore

    ctx = _ctx(tmp_path)
    src = write_jpeg(tmp_path / "c" / "a.jpg", size=(320, 240))
    mine = src.with_name("a.jpg.preview.webp")
    Image.new("RGB", (8, 8), (200, 0, 0)).save(mine, "WEBP")
    before = mine.read_bytes()
    o = archive_file(src, ctx)
    assert o.original_status == "removed" and mine.read_bytes() == before
    assert _row(ctx, o.file_id).preview_path is None
    assert any(k == "preview_skipped" for k, _ in _events(ctx, o.file_id))
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault)
    assert r.status == "restored" and mine.read_bytes() == before


def test_a_preview_changed_after_it_was_written_is_left_on_restore(tmp_path):
    """The preview archiver wrote was replaced by the user's own file under the same name: the
    in-place restore leaves it, with an event saying why."""
    from archiver.testing.catalog import write_jpeg
    from archiver.work import archive_file, restore

    ctx = _ctx(tmp_path)
    src = write_jpeg(tmp_path / "c" / "a.jpg", size=(320, 240))
    o = archive_file(src, ctx)
    p = Path(_row(ctx, o.file_id).preview_path)
    Image.new("RGB", (8, 8), (0, 0, 200)).save(p, "WEBP")  # edited by the user
    mine = p.read_bytes()
    restore(ctx.catalog, [str(src)], vault=ctx.vault)
    assert p.read_bytes() == mine
    left = [d for k, d in _events(ctx, o.file_id) if k == "preview_left"]
    assert left and "content changed" in left[0]["why"]
    assert _row(ctx, o.file_id).preview_path == str(p)  # still recorded: not removed


def test_a_preview_archiver_wrote_is_replaced_for_a_new_version(tmp_path):
    """A new version of the file gets a new preview over the old one (its recorded digest still
    matches), and the restore of the new version removes it."""
    from archiver.testing.catalog import write_jpeg
    from archiver.work import archive_file, restore

    ctx = _ctx(tmp_path)
    src = write_jpeg(tmp_path / "c" / "a.jpg", size=(320, 240))
    archive_file(src, ctx)
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault, to=tmp_path / "elsewhere")
    write_jpeg(src, seed=7, size=(320, 240))  # the user puts a new photo under the old name
    o2 = archive_file(src, ctx)
    row = _row(ctx, o2.file_id)
    assert row.preview_path and row.preview_sha256
    assert any(k == "preview_written" for k, _ in _events(ctx, o2.file_id))
    (r,) = restore(ctx.catalog, [str(src)], vault=ctx.vault)
    assert r.status == "restored" and not Path(row.preview_path).exists()
