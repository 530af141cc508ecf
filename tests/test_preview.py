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
    from archiver.catalog.cli import _files
    from archiver.service.watcher import is_candidate, walk

    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "a.jpg.preview.webp").write_bytes(b"x")
    (tmp_path / "b.png.preview.avif").write_bytes(b"x")
    (tmp_path / "c.webp").write_bytes(b"x")  # an ordinary WebP photo still is one
    assert [Path(p).name for p in walk(tmp_path)] == ["a.jpg", "c.webp"]
    assert not is_candidate(tmp_path / "a.jpg.preview.webp")
    assert sorted(f.name for f, _ in _files([tmp_path])) == ["a.jpg", "c.webp"]
