"""The dashboard's endpoints, through Flask's test client on a real archived collection:
every page and API route, bad arguments, path traversal, missing/wrong token, CSRF, huge pages."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from archiver.config import Config
from archiver.errors import UsageError
from archiver.app.web.app import create_app
from archiver.app.web.settings import web_settings
from archiver.testing.web import TOKEN, make_collection


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    ctx, ids = make_collection(tmp)
    return tmp, ctx, ids


def _app(coll, token=TOKEN, **web):
    tmp, ctx, _ = coll
    cfg = Config(catalog_url=ctx.catalog.url, vault_dir=str(tmp / "vault"),
                 web={"token": token, "cache_dir": str(tmp / "web-cache"), **web})
    return create_app(cfg, web_settings(cfg), ctx.catalog, vault=ctx.vault, codecs_factory=lambda: ctx.codecs)


@pytest.fixture(scope="module")
def client(coll):
    return _app(coll).test_client()


def _csrf(html: bytes) -> str:
    m = re.search(rb'name="csrf_token" value="([^"]+)"', html)
    assert m, "the page has no CSRF token"
    return m.group(1).decode()


# -- overview ----------------------------------------------------------------------------------
def test_overview_page_shows_savings_plot_and_problems(client, coll):
    r = client.get("/")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert "<svg" in html and "before" in html  # the bytes-over-time plot, inline
    for rule in ("textures", "strict", "vaulted", "keepers"):
        assert rule in html
    assert "broken.jpg" in html and "bad_input" in html  # a failure with its reason
    assert "fallback" in html and "quality guard" in html  # the strict rule fell back, and why
    assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html)  # nothing loaded from elsewhere


def test_api_overview_numbers_match_the_catalog(client, coll):
    _, ctx, ids = coll
    d = client.get("/api/overview").get_json()
    rules = {g["key"]: g for g in d["by_rule"]}
    assert set(rules) == {"textures", "strict", "vaulted", "default", "keepers"}
    assert d["total"]["files"] == 5 and d["states"] == {"committed": 5, "skipped": 1}
    assert d["total"]["bytes_after"] < d["total"]["bytes_before"]
    assert {g["key"] for g in d["by_codec"]} >= {"diffusion", "lossless"}
    folders = {g["key"].rsplit("/", 1)[-1] for g in d["by_folder"]}
    assert folders == {"tex", "strict", "vault", "misc", "keep"}
    assert d["vault"]["files"] == 2 and [f["files"] for f in d["vault"]["frees"]] == [1, 1]  # 3 and 30 days
    assert d["over_time"][-1]["bytes_before"] == d["total"]["bytes_before"]
    kinds = {p["kind"] for p in d["problems"]}
    assert {"bad_input", "fallback"} <= kinds
    assert d["daemon"]["running"] is False


# -- browser -----------------------------------------------------------------------------------
def test_browse_filters(client, coll):
    tmp, _, ids = coll
    by = lambda **a: [r["id"] for r in client.get("/api/files", query_string=a).get_json()["items"]]
    assert sorted(by()) == sorted(ids.values())
    assert by(rule="textures") == [ids["forest"]]
    assert by(state="skipped") == [ids["broken"]]
    assert by(codec="diffusion") == [ids["forest"]]
    assert by(action="keep") == [ids["kept"]]
    assert by(path="beach") == [ids["vaulted"]]  # a name fragment
    assert sorted(by(path=str(tmp / "photos" / "misc"))) == sorted([ids["graphic"], ids["broken"]])  # a prefix
    assert by(path="100%_not_there") == []  # LIKE wildcards are escaped
    assert sorted(by(since="2000-01-01")) == sorted(ids.values())
    assert by(until="2000-01-01") == []
    html = client.get("/files", query_string={"rule": "textures"}).get_data(as_text=True)
    assert "forest.jpg" in html and "beach.jpg" not in html


def test_browse_pages_through_everything_once(client, coll):
    _, _, ids = coll
    seen, before = [], None
    for _ in range(10):
        d = client.get("/api/files", query_string={"limit": 2, **({"before": before} if before else {})}).get_json()
        seen += [r["id"] for r in d["items"]]
        before = d["next_before"]
        if before is None:
            break
    assert seen == sorted(ids.values(), reverse=True)
    html = client.get("/files?limit=2").get_data(as_text=True)
    assert 'id="next"' in html


@pytest.mark.parametrize("args", [{"limit": 0}, {"limit": 501}, {"limit": 10**12}, {"limit": "lots"},
                                  {"before": "x"}, {"before": -1}, {"since": "yesterday"}, {"until": "2026-13-01"},
                                  {"path": "x" * 5000}])
def test_browse_refuses_bad_and_huge_pages(client, args):
    r = client.get("/api/files", query_string=args)
    assert r.status_code == 400
    assert r.get_json()["error"]
    assert client.get("/files", query_string=args).status_code == 400


HUGE_IDS = [2**31, 2**63, 99999999999999999999999]  # past PostgreSQL's 32-bit and SQLite's 64-bit integers


@pytest.mark.parametrize("huge", HUGE_IDS)
@pytest.mark.parametrize("method,url,status", [
    ("GET", "/files/{}", 404), ("GET", "/api/files/{}", 404), ("GET", "/api/files/{}/original", 404),
    ("GET", "/api/files/{}/decoded", 404), ("POST", "/api/files/{}/restore", 404), ("POST", "/files/{}/restore", 404),
    ("GET", "/api/files?before={}", 400), ("GET", "/files?before={}", 400)])
def test_ids_beyond_the_database_range_are_refused_not_a_crash(coll, method, url, status, huge):
    """F5: an id no database integer holds, in the path or in ``before=``, was an OverflowError
    and HTTP 500; now 404 in a path and 400 (with the reason) in a query."""
    _, _, ids = coll
    c = _app(coll).test_client()
    c.application.testing = True  # an exception inside the app reaches the test, not a quiet 500
    csrf = _csrf(c.get(f"/files/{ids['forest']}").data)
    form = {"csrf_token": csrf, "token": TOKEN}
    r = c.open(url.format(huge), method=method, headers={"Authorization": f"Bearer {TOKEN}"},
               data=form if url.startswith("/files/") and method == "POST" else None)
    assert r.status_code == status
    if url.startswith("/api/"):
        assert r.get_json()["error"]
    if status == 400:
        assert "before" in (r.get_json()["error"] if url.startswith("/api/") else r.get_data(as_text=True))


def test_the_largest_id_is_still_an_id(client, coll):
    _, _, ids = coll
    assert client.get(f"/api/files?before={2**31 - 1}").get_json()["items"]  # every row is older
    assert client.get(f"/api/files/{2**31 - 1}").status_code == 404  # in range, no such row


# -- file page and pictures --------------------------------------------------------------------
def test_file_page_and_detail(client, coll):
    _, _, ids = coll
    html = client.get(f"/files/{ids['forest']}").get_data(as_text=True)
    assert 'id="img-original"' in html and 'id="img-decoded"' in html
    assert html.count('class="region"') == 1  # the protected region as a box
    assert "MS-SSIM" in html and "restore-form" in html
    d = client.get(f"/api/files/{ids['forest']}").get_json()
    assert d["file"]["rule"] == "textures" and d["regions"] == [[128, 8, 160, 40]]
    assert [e["kind"] for e in d["events"]][:2] == ["discovered", "classified"]
    assert client.get("/api/files/999999").status_code == 404
    assert client.get("/files/999999").status_code == 404


def test_pictures_original_from_vault_and_decoded(client, coll):
    _, ctx, ids = coll
    r = client.get(f"/api/files/{ids['forest']}/original")
    assert r.status_code == 200 and r.mimetype == "image/jpeg" and r.headers["X-Archiver-Source"] == "vault"
    with ctx.catalog.session() as s:
        from archiver.catalog.models import FileVersion

        row = s.get(FileVersion, ids["forest"])
        sha, size = row.sha256, (row.width, row.height)
    assert hashlib.sha256(r.data).hexdigest() == sha  # the very original bytes
    r = client.get(f"/api/files/{ids['forest']}/decoded")
    assert r.status_code == 200 and r.mimetype == "image/png" and r.headers["X-Archiver-Source"] == "reconstruction"
    assert Image.open(io.BytesIO(r.data)).size == size
    r = client.get(f"/api/files/{ids['graphic']}/decoded")  # lossless: the exact original back
    assert r.status_code == 200 and r.headers["X-Archiver-Source"] == "lossless"
    r = client.get(f"/api/files/{ids['kept']}/decoded")  # kept as is: nothing decoded, said why
    assert r.status_code == 404 and "kept" in r.get_json()["error"]


def test_damaged_compressed_file_is_said_not_shown(coll, tmp_path):
    _, ctx, ids = coll
    with ctx.catalog.session() as s:
        from archiver.catalog.models import FileVersion

        cp = Path(s.get(FileVersion, ids["strict"]).compressed_path)
    saved = cp.read_bytes()
    try:
        cp.write_bytes(saved[:-10] + b"0123456789")
        r = _app(coll, cache_dir=str(tmp_path)).test_client().get(f"/api/files/{ids['strict']}/decoded")
        assert r.status_code == 404 and "damaged" in r.get_json()["error"]
    finally:
        cp.write_bytes(saved)


@pytest.mark.parametrize("harm", ["flipped byte", "same-size link"])
def test_a_damaged_vault_copy_is_never_served(tmp_path, harm):
    """F6: the vault was trusted on size alone, so a flipped byte was served as the original,
    and a link put in place of an object was followed. Now the lossless file's exact original is
    shown instead, or (a diffusion file: no other copy) a clear 409; never the vault's bytes."""
    import os

    from archiver.catalog.models import FileVersion

    ctx, ids = make_collection(tmp_path, preview=False)
    with ctx.catalog.session() as s:
        rows = {k: (Path(s.get(FileVersion, ids[k]).vault_path), s.get(FileVersion, ids[k]).sha256)
                for k in ("vaulted", "forest")}
    for obj, _ in rows.values():
        data = obj.read_bytes()
        os.chmod(obj, 0o644)
        if harm == "flipped byte":
            obj.write_bytes(data[:100] + bytes([data[100] ^ 0x10]) + data[101:])
        else:  # the link points at another picture, padded to the original's size
            other = io.BytesIO()
            Image.new("RGB", (8, 8), "red").save(other, "JPEG")
            secret = tmp_path / f"secret-{obj.name}.jpg"
            secret.write_bytes(other.getvalue().ljust(len(data), b"\0"))
            obj.unlink()
            obj.symlink_to(secret)
    cfg = Config(catalog_url=ctx.catalog.url, web={"cache_dir": str(tmp_path / "web-cache")})
    c = create_app(cfg, web_settings(cfg), ctx.catalog, vault=ctx.vault, codecs_factory=lambda: ctx.codecs).test_client()
    c.application.testing = True
    r = c.get(f"/api/files/{ids['vaulted']}/original")  # lossless: the exact original from the .jxl
    assert r.status_code == 200 and r.headers["X-Archiver-Source"] == "lossless"
    assert hashlib.sha256(r.data).hexdigest() == rows["vaulted"][1]
    assert "vault copy damaged" in r.headers["X-Archiver-Note"]
    r = c.get(f"/api/files/{ids['forest']}/original")  # diffusion: nothing else holds the original
    assert r.status_code == 409 and "vault copy damaged" in r.get_json()["error"]
    assert c.get(f"/api/files/{ids['forest']}/decoded").status_code == 200  # the other side still shows
    assert c.get(f"/files/{ids['forest']}").status_code == 200


@pytest.mark.parametrize("url", ["/api/files/..%2F..%2Fetc%2Fpasswd/original", "/api/files/1/../../../etc/passwd",
                                 "/bench/kodak/..%2F..%2F..%2Fpyproject.toml", "/bench/kodak/../../pyproject.toml",
                                 "/bench/..%2Fbench/kodak/results.json", "/bench/kodak/%2Fetc%2Fpasswd",
                                 "/bench/kodak/results.json", "/static/..%2Fapp.py", "/static/../app.py"])
def test_path_traversal_is_refused(client, url):
    r = client.get(url, follow_redirects=True)  # werkzeug may first merge '//' with a redirect
    assert r.status_code == 404
    assert b"root:" not in r.data and b"[project]" not in r.data and b"def create_app" not in r.data


# -- bench ---------------------------------------------------------------------------------------
def test_bench_pages(coll, tmp_path):
    run = tmp_path / "bench" / "mini"
    (run / "crops").mkdir(parents=True)
    (run / "summary.md").write_text("# Mini\n\n| codec | bpp |\n|---|---|\n| ours | 0.1 |\n\n<script>alert(1)</script>\n\n"
                                    "![crop](crops/a.png)\n")
    (run / "results.json").write_text('{"config": {"bpps": [0.1], "codecs": ["ours"]}, "images_done": 3, '
                                      '"verdicts": [{"target_bpp": 0.1, "text": ["beats JPEG"]}]}')
    Image.new("RGB", (8, 8), "red").save(run / "crops" / "a.png")
    c = _app(coll, bench_dir=str(tmp_path / "bench")).test_client()
    assert [r["name"] for r in c.get("/api/bench").get_json()] == ["mini"]
    assert "beats JPEG" in c.get("/bench/").get_data(as_text=True)
    html = c.get("/bench/mini/").get_data(as_text=True)
    assert "<table>" in html and 'src="crops/a.png"' in html
    assert "<script>alert" not in html  # raw HTML in the markdown is escaped
    r = c.get("/bench/mini/crops/a.png")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert c.get("/bench/nope/").status_code == 404
    assert c.get("/bench/mini/summary.md").status_code == 404  # only pictures are served


def test_links_below_the_bench_folder_are_never_followed(coll, tmp_path):
    """F6: ``<bench_dir>/run1/leak.png -> /etc/passwd`` was served by /bench/run1/leak.png. A
    link anywhere below the bench folder (a run, a folder in it, a picture, its summary) is 404."""
    secret = tmp_path / "secret"
    (secret / "crops").mkdir(parents=True)
    Image.new("RGB", (8, 8), "blue").save(secret / "crops" / "a.png")
    (secret / "results.json").write_text('{"images_done": 1}')
    (secret / "notes.md").write_text("# the secret notes\n")
    bench = tmp_path / "bench"
    run = bench / "run1"
    (run / "real").mkdir(parents=True)
    (run / "results.json").write_text('{"images_done": 1}')
    Image.new("RGB", (8, 8), "red").save(run / "real" / "ok.png")
    (run / "leak.png").symlink_to("/etc/passwd")
    (run / "pic.png").symlink_to(secret / "crops" / "a.png")  # even a real picture elsewhere
    (run / "crops").symlink_to(secret / "crops", target_is_directory=True)
    (run / "summary.md").symlink_to(secret / "notes.md")
    (bench / "linked").symlink_to(secret, target_is_directory=True)  # a whole run elsewhere
    c = _app(coll, bench_dir=str(bench)).test_client()
    c.application.testing = True
    assert c.get("/bench/run1/real/ok.png").status_code == 200  # what is really there is served
    for url in ("/bench/run1/leak.png", "/bench/run1/pic.png", "/bench/run1/crops/a.png", "/bench/linked/crops/a.png",
                "/bench/linked/"):
        r = c.get(url)
        assert r.status_code == 404, url
        assert b"root:" not in r.data and not r.data.startswith(b"\x89PNG"), url
    assert [r["name"] for r in c.get("/api/bench").get_json()] == ["run1"]
    html = c.get("/bench/run1/").get_data(as_text=True)
    assert "secret notes" not in html  # the linked summary.md is not rendered
    assert "crops/a.png" not in html and "pic.png" not in html  # nor linked pictures listed
    assert "real/ok.png" in html


def test_shipped_bench_results_are_listed(client):
    runs = client.get("/api/bench").get_json()
    if not runs:
        pytest.skip("no docs/bench beside this checkout")
    assert "kodak" in {r["name"] for r in runs}
    assert client.get("/bench/kodak/").status_code == 200


# -- changes: token, CSRF, host --------------------------------------------------------------------
def test_restore_api_needs_the_token(coll):
    _, ctx, ids = coll
    c = _app(coll).test_client()
    url = f"/api/files/{ids['graphic']}/restore"
    r = c.post(url)
    assert r.status_code == 401 and "token" in r.get_json()["error"]
    r = c.post(url, headers={"Authorization": "Bearer not-the-token-at-all"})
    assert r.status_code == 403
    assert c.get(url).status_code == 405
    ro = _app(coll, token=None).test_client()
    r = ro.post(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 403 and "read-only" in r.get_json()["error"]
    assert "restore-form" not in ro.get(f"/files/{ids['graphic']}").get_data(as_text=True)
    with ctx.catalog.session() as s:
        from archiver.catalog.models import FileVersion

        row = s.get(FileVersion, ids["graphic"])
        path, sha = Path(row.path), row.sha256
    assert not path.exists()  # nothing above restored anything


def test_restore_api_with_the_token_restores_and_removes_the_preview(coll):
    _, ctx, ids = coll
    with ctx.catalog.session() as s:
        from archiver.catalog.models import FileVersion

        row = s.get(FileVersion, ids["graphic"])
        path, sha, preview = Path(row.path), row.sha256, row.preview_path
    assert preview and Path(preview).is_file()  # written when the collection was archived
    r = _app(coll).test_client().post(f"/api/files/{ids['graphic']}/restore", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["status"] == "restored" and r.get_json()["exact"] == "bytes"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert not Path(preview).exists()
    with ctx.catalog.session() as s:
        from archiver.catalog.models import FileVersion

        assert s.get(FileVersion, ids["graphic"]).preview_path is None
    r = _app(coll).test_client().post(f"/api/files/{ids['graphic']}/restore", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.get_json()["status"] == "present"  # again: already there, nothing overwritten


def test_restore_form_needs_csrf_and_token(coll):
    _, ctx, ids = coll
    c = _app(coll).test_client()
    url = f"/files/{ids['vaulted']}/restore"
    csrf = _csrf(c.get(f"/files/{ids['vaulted']}").data)
    r = c.post(url, data={"token": TOKEN})  # no CSRF token
    assert r.status_code == 400 and b"CSRF" in r.data
    r = _app(coll).test_client().post(url, data={"token": TOKEN, "csrf_token": csrf})  # another session's token
    assert r.status_code == 400
    r = c.post(url, data={"csrf_token": csrf})
    assert r.status_code == 401
    r = c.post(url, data={"csrf_token": csrf, "token": TOKEN[:-1] + "x"})
    assert r.status_code == 403
    with ctx.catalog.session() as s:
        from archiver.catalog.models import FileVersion

        row = s.get(FileVersion, ids["vaulted"])
        path, sha = Path(row.path), row.sha256
    assert not path.exists()
    r = c.post(url, data={"csrf_token": csrf, "token": TOKEN})
    assert r.status_code == 200 and b'id="restore-result"' in r.data and b"restored" in r.data
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha  # from the vault, byte for byte


def test_restore_of_an_unfinished_file_is_refused(client, coll):
    _, _, ids = coll
    r = client.post(f"/api/files/{ids['broken']}/restore", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 409 and r.get_json()["status"] == "refused"
    assert client.post("/api/files/999999/restore", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_foreign_host_header_is_refused(client):
    """DNS rebinding: a page on another site that resolves its name to 127.0.0.1 gets nothing."""
    assert client.get("/api/overview", headers={"Host": "evil.example:8765"}).status_code == 400
    r = client.get("/", headers={"Host": "evil.example"})
    assert r.status_code == 400 and b"untrusted Host" in r.data
    assert client.get("/api/overview", headers={"Host": "127.0.0.1:8765"}).status_code == 200


def test_big_posts_are_refused(client, coll):
    _, _, ids = coll
    r = client.post("/api/files/999999/restore", data=b"x" * (1 << 20),
                    headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"})
    assert r.status_code == 413  # refused before anything looks at it


# -- settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("web,msg", [({"token": "short"}, "at least"), ({"tokn": "x" * 20}, "unknown web setting"),
                                     ({"port": 70000}, "port"), ({"with_daemon": "yes"}, "true or false")])
def test_bad_web_settings_are_clear_errors(web, msg):
    with pytest.raises(UsageError, match=msg):
        web_settings(Config(web=web))


def test_loopback_detection():
    assert web_settings(Config()).loopback
    assert web_settings(Config(web={"host": "::1"})).loopback
    assert not web_settings(Config(web={"host": "0.0.0.0"})).loopback


def test_overview_sums_follow_the_catalog(coll):
    """The sums are kept while nothing changes, computed again after a change (at once with
    overview_refresh_s 0; not before the refresh time otherwise, and the page says so)."""
    from archiver.catalog import queries as q
    from archiver.catalog.models import FileVersion

    _, ctx, ids = coll
    fresh = _app(coll, overview_refresh_s=0).test_client()
    lazy = _app(coll, overview_refresh_s=3600).test_client()
    a, b = fresh.get("/api/overview").get_json(), lazy.get("/api/overview").get_json()
    assert a["sums_current"] and b["sums_current"] and a["total"] == b["total"]
    with ctx.catalog.session() as s:  # one more kept file: a change the sums must show
        row = s.get(FileVersion, ids["kept"])
        new = q.transition(s, FileVersion(path=row.path + ".v2", root=row.root, size=1000), "discovered")
        q.transition(s, new, "classified", rule="keepers", action="keep")
        q.transition(s, new, "committed", original_status="kept", committed_at=row.committed_at)
    a2, b2 = fresh.get("/api/overview").get_json(), lazy.get("/api/overview").get_json()
    assert a2["total"]["files"] == a["total"]["files"] + 1 and a2["sums_current"]
    assert b2["total"] == b["total"] and not b2["sums_current"]  # kept, and said to be older
    assert b2["states"]["committed"] == a2["states"]["committed"]  # counts are always live
    assert "computed again" in lazy.get("/").get_data(as_text=True)


def test_vault_schedule_counts_forever_and_overdue(coll):
    import datetime as dt

    from archiver.catalog import queries as q

    _, ctx, _ = coll
    with ctx.catalog.read_session() as s:
        now = q.vault_schedule(s)
        later = q.vault_schedule(s, dt.datetime.utcnow() + dt.timedelta(days=10))  # past the 3-day retention
    assert now["past_retention"]["files"] == 0 and later["past_retention"]["files"] == 1
    assert later["files"] == now["files"] - 1 and len(later["frees"]) == len(now["frees"]) - 1


# -- archiver serve ------------------------------------------------------------------------------
def test_serve_json_says_where_it_serves_with_an_integer_port(tmp_path):
    """``serve --port 0 --json``: one JSON line first, whose port is a number (it was the string
    waitress's getnameinfo gives) and is where the dashboard answers."""
    import json
    import os
    import subprocess
    import sys
    import urllib.request

    from archiver.catalog.db import open_catalog

    cfg = tmp_path / "archiver.yaml"
    url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    cfg.write_text(json.dumps({"catalog_url": url, "vault_dir": str(tmp_path / "vault")}))
    open_catalog(url, create=True).close()  # serve never creates a catalog (issue 22 F2)
    env = dict(os.environ, ARCHIVER_HOME=str(tmp_path / "state"), PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "archiver", "serve", "--port", "0", "--json", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        info = json.loads(proc.stdout.readline())
        assert type(info["port"]) is int and 0 < info["port"] < 65536
        assert info["url"] == f"http://127.0.0.1:{info['port']}/" and info["writable"] is False
        body = json.loads(urllib.request.urlopen(f"{info['url']}api/status", timeout=30).read())
        assert body["writable"] is False
    finally:
        proc.terminate()
        proc.wait(timeout=30)
