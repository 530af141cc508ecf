"""The dashboard's duplicates view (issue 28): exact copies and near duplicates side by side with
thumbnails, in HTML and JSON; read-only (nothing to post, nothing deleted)."""

from __future__ import annotations

import shutil

from PIL import Image

from archiver.app.web.app import create_app
from archiver.app.web.settings import web_settings
from archiver.config import Config
from archiver.testing.catalog import make_context
from archiver.work import archive_file
from test_duplicates_cli import picture, save_jpeg


def _client(tmp_path):
    ctx = make_context(tmp_path / "state")
    photos = tmp_path / "photos"
    a = save_jpeg(picture(1), photos / "camera" / "a.jpg")
    (photos / "backup").mkdir()
    shutil.copyfile(a, photos / "backup" / "a.jpg")
    save_jpeg(picture(1).resize((160, 120), Image.LANCZOS), photos / "phone" / "a-small.jpg", q=70)
    save_jpeg(picture(2), photos / "camera" / "b.jpg")
    ids = {p.name + p.parent.name: archive_file(p, ctx).file_id for p in sorted(photos.rglob("*.jpg"))}
    cfg = Config(catalog_url=ctx.catalog.url, vault_dir=str(tmp_path / "state" / "vault"),
                 web={"cache_dir": str(tmp_path / "web-cache")})
    app = create_app(cfg, web_settings(cfg), ctx.catalog, vault=ctx.vault, codecs_factory=lambda: ctx.codecs)
    return app.test_client(), ids, ctx


def test_duplicates_page_shows_the_groups_side_by_side_with_thumbnails(tmp_path):
    client, ids, ctx = _client(tmp_path)
    try:
        r = client.get("/duplicates")
        assert r.status_code == 200
        html = r.get_data(as_text=True)
        assert "Exact copies (1 group)" in html and "Near duplicates (1 group)" in html
        for key in ("a.jpgcamera", "a.jpgbackup", "a-small.jpgphone"):
            assert f'src="/api/files/{ids[key]}/thumb"' in html  # the grid's cached thumbnails, not the originals
        assert f'/api/files/{ids["b.jpgcamera"]}/thumb' not in html  # another picture: in no group
        assert "<form" not in html  # read-only: nothing to delete
        assert 'href="/duplicates" class="on"' in html  # reachable from the dashboard's navigation
        d = client.get("/api/duplicates").get_json()
        assert [sorted(f["id"] for f in g) for g in d["near"]] == [sorted(ids[k] for k in ("a.jpgcamera", "a.jpgbackup", "a-small.jpgphone"))]
        assert len(d["exact"]) == 1 and sum(1 for f in d["exact"][0] if f["artifact_of"]) == 1
        thumb = client.get(f"/api/files/{ids['a-small.jpgphone']}/thumb")
        assert thumb.status_code == 200 and thumb.mimetype.startswith("image/")
    finally:
        ctx.catalog.close()
