"""What the dashboard's pages say (issue 26): the restore label comes from the codec, the problems
list has one line per file and shows missing and forgotten files, evidence and events read as
tables and lists, the grid view shows thumbnails with server-side filters, and the chart of a
single day does not start from an invented zero."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from archiver.app.web.app import create_app
from archiver.app.web.plot import bytes_svg
from archiver.app.web.settings import web_settings
from archiver.catalog import queries as q
from archiver.catalog.models import Event, FileVersion
from archiver.config import Config
from archiver.testing.web import TOKEN, add_avif, make_collection


def _collection(tmp: Path):
    """The dashboard's test collection (fake diffusion codec), plus one photo archived as AVIF
    whose original is replaced (so only the AVIF file is left)."""
    ctx, ids = make_collection(tmp)
    ids["avif"] = add_avif(ctx, tmp)
    return ctx, ids


def _client(tmp: Path, ctx):
    cfg = Config(catalog_url=ctx.catalog.url, vault_dir=str(tmp / "vault"),
                 web={"token": TOKEN, "cache_dir": str(tmp / "web-cache")})
    return create_app(cfg, web_settings(cfg), ctx.catalog, vault=ctx.vault, codecs_factory=lambda: ctx.codecs).test_client()


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webpages")
    ctx, ids = _collection(tmp)
    return tmp, ctx, ids, _client(tmp, ctx)


def _restore_gives(html: str) -> str:
    m = re.search(r"<th>restore gives</th><td[^>]*>(.*?)</td>", html, re.S)
    assert m, "no 'restore gives' line on the page"
    return m.group(1)


# -- 1. "restore gives" comes from the codec ------------------------------------------------------
def test_restore_label_says_what_each_codec_gives_back(coll):
    _, _, ids, c = coll
    avif = _restore_gives(c.get(f"/files/{ids['avif']}").get_data(as_text=True))
    assert "conventional lossy, AVIF q" in avif and "generative" not in avif
    assert c.get(f"/api/files/{ids['avif']}").get_json()["restore_gives"] == avif
    forest = _restore_gives(c.get(f"/files/{ids['forest']}").get_data(as_text=True))
    assert "generative" in forest and "diffusion" in forest
    for name in ("graphic", "vaulted", "strict"):  # lossless: exact, whatever the rule first tried
        cell = _restore_gives(c.get(f"/files/{ids[name]}").get_data(as_text=True))
        assert cell.startswith("exact") and "approximation" not in cell


# -- 2. the problems: one line per file; missing and forgotten files too -------------------------
def test_problems_list_each_file_once(coll):
    _, _, ids, c = coll
    problems = c.get("/api/overview").get_json()["problems"]
    files = [p["file_id"] for p in problems]
    assert len(files) == len(set(files)), problems  # the strict rule's two fallback events: one line
    strict = next(p for p in problems if p["file_id"] == ids["strict"])
    assert strict["kind"] == "fallback" and "quality guard" in strict["why"]
    html = c.get("/").get_data(as_text=True)
    assert html.count(f'href="/files/{ids["strict"]}"') == 1


def test_problems_show_files_verify_found_missing_then_forgotten(tmp_path):
    from archiver.work.forget import forget
    from archiver.work.verify import verify

    ctx, ids = make_collection(tmp_path)
    c = _client(tmp_path, ctx)
    with ctx.catalog.read_session() as s:
        lost = s.get(FileVersion, ids["graphic"]).compressed_path
    Path(lost).unlink()  # the disk lost the archived file
    for _ in range(2):  # a weekly verify: the finding is recorded once, not once per run
        rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs, decode=False)
        assert [m["id"] for m in rep.mismatches] == [ids["graphic"]]
    with ctx.catalog.read_session() as s:
        found = len(s.query(Event).filter(Event.file_id == ids["graphic"], Event.kind == q.VERIFY_FAILED).all())
    assert found == 1
    row = next(p for p in c.get("/api/overview").get_json()["problems"] if p["file_id"] == ids["graphic"])
    assert row["kind"] == "missing" and "compressed file missing" in row["why"]
    assert 'class="badge missing"' in c.get("/").get_data(as_text=True)

    forget(ctx.catalog, [str(ids["graphic"])], vault=ctx.vault, reason="disk failed")
    problems = c.get("/api/overview").get_json()["problems"]
    rows = [p for p in problems if p["file_id"] == ids["graphic"]]
    assert len(rows) == 1  # the forget's two events and the verify finding: one line
    assert rows[0]["kind"] == "forgotten" and rows[0]["kinds"] == ["forgotten", "missing"]
    assert "disk failed" in rows[0]["why"]
    assert 'class="badge forgotten"' in c.get("/").get_data(as_text=True)


# -- 3. evidence and events are tables and lists, raw JSON only behind a toggle -----------------
def _section(html: str, start: str, end: str) -> str:
    i = html.index(start)
    return html[i:html.index(end, i)]


def _outside_raw(html: str) -> str:
    return re.sub(r'<details class="raw">.*?</details>', "", html, flags=re.S)


def test_evidence_and_events_read_as_tables_not_json(coll):
    _, _, ids, c = coll
    html = c.get(f"/files/{ids['strict']}").get_data(as_text=True)
    evidence = _section(html, "<h3>Evidence</h3>", "<h2>Restore</h2>")
    events = _section(html, "<h2>Events</h2>", "</section>")
    for part in (evidence, events):
        shown = _outside_raw(part)
        assert "{&#34;" not in shown and '{"' not in shown and "&#34;:" not in shown, shown[:500]
        assert '<details class="raw">' in part  # the JSON is still there for whoever wants it
    rows = re.findall(r"<tr><td>(\w+)</td>", evidence)
    assert rows == ["faces", "text"]  # one row per classifier, with its reason in words
    assert "no face" in evidence
    fallback = re.findall(r"<td>fallback</td>.*?</tr>", events, re.S)
    assert len(fallback) == 2 and "<li>diffusion: quality guard" in fallback[0]  # reasons as a list


# -- 4. the grid: thumbnails, filters on the server, paging ---------------------------------------
def test_grid_view_shows_thumbnails_filtered_by_rule_and_codec(coll):
    _, _, ids, c = coll
    html = c.get("/files?view=grid").get_data(as_text=True)
    thumbs = re.findall(r'<img loading="lazy"[^>]*src="/api/files/(\d+)/thumb"', html)
    assert sorted(map(int, thumbs)) == sorted(ids.values())
    html = c.get("/files", query_string={"view": "grid", "rule": "small"}).get_data(as_text=True)
    assert re.findall(r'src="/api/files/(\d+)/thumb"', html) == [str(ids["avif"])]
    html = c.get("/files", query_string={"view": "grid", "codec": "lossless"}).get_data(as_text=True)
    shown = set(map(int, re.findall(r'src="/api/files/(\d+)/thumb"', html)))
    assert shown == {ids["strict"], ids["vaulted"], ids["graphic"]}
    page = c.get("/files", query_string={"view": "grid", "limit": 2}).get_data(as_text=True)
    older = re.search(r'id="next" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert "view=grid" in older and "before=" in older  # paging keeps the view
    assert c.get("/files", query_string={"view": "mosaic"}).status_code == 400


def test_thumbnails_are_small_jpegs_cached_from_the_cheapest_source(coll):
    tmp, ctx, ids, c = coll
    with ctx.catalog.read_session() as s:  # the chart's preview is gone: its lossless file gives it back
        Path(s.get(FileVersion, ids["graphic"]).preview_path).unlink()
    for name, source in (("forest", "preview"), ("kept", "original"), ("avif", "reconstruction"), ("graphic", "lossless")):
        r = c.get(f"/api/files/{ids[name]}/thumb")
        assert r.status_code == 200 and r.mimetype == "image/jpeg", (name, r.data[:200])
        assert r.headers["X-Archiver-Source"] == source, name
        im = Image.open(io.BytesIO(r.data))
        assert im.format == "JPEG" and max(im.size) <= 256
    cached = list((tmp / "web-cache").rglob("*.jpg"))
    assert len(cached) >= 4
    r = c.get(f"/api/files/{ids['avif']}/thumb")
    assert r.headers["X-Archiver-Source"] == "cache"
    r = c.get(f"/api/files/{ids['broken']}/thumb")  # a file that is no image: said, not a crash
    assert r.status_code in (404, 422) and r.get_json()["error"]


# -- 7. the chart -----------------------------------------------------------------------------
def test_chart_of_a_single_day_does_not_start_from_an_empty_day():
    svg = bytes_svg([{"day": "2026-12-05", "files": 5, "bytes_before": 19000, "bytes_after": 9800}])
    assert "2026-12-04" not in svg  # no day before the first commit, and no zero drawn there
    assert "2026-12-05" in svg and "18.6 KiB" in svg and "9.6 KiB" in svg


def test_chart_starts_at_the_first_day_with_data():
    series = [{"day": d, "files": i + 1, "bytes_before": 1000 * (i + 1), "bytes_after": 400 * (i + 1)}
              for i, d in enumerate(["2026-12-01", "2026-12-03", "2026-12-05"])]
    svg = bytes_svg(series)
    assert "2026-11-30" not in svg and "2026-12-01" in svg and "2026-12-05" in svg
