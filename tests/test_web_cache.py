"""The dashboard's picture cache (F4): capped, least recently used out first, never a reason for
a picture not to be served, and counted by ``stats`` and ``doctor``."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archiver.config import Config
from archiver.app.web.app import create_app
from archiver.app.web.images import Pictures
from archiver.app.web.settings import web_settings
from archiver.testing.web import make_collection


def _tree(d: Path) -> tuple[int, int]:
    files = [p for p in d.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_the_cache_evicts_the_least_recently_used_past_its_cap(tmp_path):
    from archiver.app.web.cache import PictureCache

    c = PictureCache(tmp_path / "c", max_bytes=1000)
    keys = [f"{i:02x}" * 32 for i in range(4)]
    now = time.time()
    for age, k in zip((30, 20, 10), keys):
        assert c.put(k, b"x" * 300)
        os.utime(c.path(k), (now - age, now - age))  # put in that order, long ago
    assert c.get(keys[0]) == b"x" * 300  # a hit: now the most recently used
    assert c.put(keys[3], b"y" * 300)  # 1200 bytes > 1000: the least recently used go
    assert c.get(keys[1]) is None  # the oldest not read since
    assert all(c.get(k) is not None for k in (keys[0], keys[2], keys[3]))
    assert _tree(tmp_path / "c")[1] <= 1000
    assert not c.put("ff" * 32, b"z" * 1001) and c.get("ff" * 32) is None  # bigger than the whole cache
    assert not PictureCache(tmp_path / "off", max_bytes=0).put(keys[0], b"x")  # 0: no cache
    assert not (tmp_path / "off").exists()


def test_the_cache_sees_what_other_processes_wrote(tmp_path, monkeypatch):
    """Two dashboards (serve and a daemon's) may share the folder: each counts it again (at
    least every RESCAN_S; here every write), so the cap holds for both together."""
    from archiver.app.web import cache
    from archiver.app.web.cache import PictureCache

    monkeypatch.setattr(cache, "RESCAN_S", 0.0)
    a, b = PictureCache(tmp_path / "c", max_bytes=1000), PictureCache(tmp_path / "c", max_bytes=1000)
    a.put("a0" + "0" * 62, b"x" * 300)  # a counts 300
    for i in range(3):
        b.put(f"b{i}" + "0" * 62, b"x" * 300)  # b sees a's file too, and trims the folder
    assert _tree(tmp_path / "c")[1] <= 1000
    for i in range(1, 3):
        a.put(f"a{i}" + "0" * 62, b"x" * 300)  # a alone would count 900: b's files count too
        assert _tree(tmp_path / "c")[1] <= 1000


def _bmp(seed: int, size=(96, 64)) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(out, "BMP")
    return out.getvalue()


def test_many_converted_pictures_stay_under_the_cap(tmp_path):
    """60 BMP originals once made 16 MB of PNGs beside 8.8 MB of .jxl; now the folder stays
    under ``cache_max_bytes`` whatever is shown."""
    one = len(Pictures(tmp_path / "probe")._displayable(_bmp(0), "original").data)
    cap = 3 * one + one // 2
    pics = Pictures(tmp_path / "cache", cache_max_bytes=cap)
    for i in range(20):
        pic = pics._displayable(_bmp(i), "original")
        assert pic.mimetype == "image/png" and Image.open(io.BytesIO(pic.data)).size == (96, 64)
        assert _tree(tmp_path / "cache")[1] <= cap
    assert _tree(tmp_path / "cache")[0] >= 2  # still a cache: the newest are kept


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webcache")
    ctx, ids = make_collection(tmp, preview=False)
    return tmp, ctx, ids


def _client(coll, cache_dir, **web):
    tmp, ctx, _ = coll
    cfg = Config(catalog_url=ctx.catalog.url, web={"cache_dir": str(cache_dir), **web})
    app = create_app(cfg, web_settings(cfg), ctx.catalog, vault=ctx.vault, codecs_factory=lambda: ctx.codecs)
    app.testing = True  # an exception reaches the test instead of a quiet 500
    return app.test_client()


@pytest.mark.parametrize("failure", ["disk full", "read-only", "a file in the way"])
def test_a_cache_that_cannot_be_written_still_serves_the_picture(coll, tmp_path, monkeypatch, caplog, failure):
    _, _, ids = coll
    cache = tmp_path / "cache"
    if failure == "a file in the way":
        cache.write_bytes(b"not a folder")
    else:
        import archiver.storage.atomic as atomic

        code = errno.ENOSPC if failure == "disk full" else errno.EROFS

        def refuse(*a, **k):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(atomic, "write_bytes", refuse)
    c = _client(coll, cache)
    for _ in range(2):  # and again: nothing half-written is served from the cache
        r = c.get(f"/api/files/{ids['forest']}/decoded")
        assert r.status_code == 200 and r.mimetype == "image/png"
        assert Image.open(io.BytesIO(r.data)).size == (192, 128)
    assert not cache.is_dir() or _tree(cache)[0] == 0
    said = [r for r in caplog.records if r.getMessage().startswith("picture cache not written")]
    assert len(said) == 1  # logged, once for both requests


def test_the_dashboard_uses_the_configured_cap(coll, tmp_path):
    _, _, ids = coll
    c = _client(coll, tmp_path / "cache", cache_max_bytes=10)  # smaller than any picture: nothing kept
    assert c.get(f"/api/files/{ids['forest']}/decoded").status_code == 200
    assert _tree(tmp_path / "cache")[0] == 0
    c = _client(coll, tmp_path / "cache2")  # the default keeps it
    assert c.get(f"/api/files/{ids['forest']}/decoded").status_code == 200
    assert _tree(tmp_path / "cache2")[0] == 1
    assert web_settings(Config()).cache_max_bytes == 256 * 1024 * 1024


@pytest.mark.parametrize("bad", [-1, "lots", True, 1.5])
def test_a_bad_cap_is_a_clear_error(bad):
    from archiver.errors import UsageError

    with pytest.raises(UsageError, match="web.cache_max_bytes"):
        web_settings(Config(web={"cache_max_bytes": bad}))


# -- counted by stats and doctor -------------------------------------------------------------------
def _fill(cache: Path, n: int = 3, size: int = 20000) -> int:
    for i in range(n):
        p = cache / f"{i:02x}" / (f"{i:02x}" * 32 + ".png")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    return sum(os.stat(p).st_blocks * 512 for p in cache.rglob("*.png"))


def test_stats_counts_the_web_cache(coll, tmp_path):
    tmp, ctx, _ = coll
    blocks = _fill(tmp_path / "cache")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"catalog_url": ctx.catalog.url, "vault_dir": str(tmp / "vault"),
                               "web": {"cache_dir": str(tmp_path / "cache")}}))
    env = dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home"), PYTHONPATH=os.pathsep.join(sys.path))
    run = lambda *a: subprocess.run([sys.executable, "-m", "archiver", "stats", "--config", str(cfg), *a],
                                    capture_output=True, text=True, timeout=300, env=env)
    r = run("--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["now"]["web_cache"] == blocks
    assert d["bytes_now"] == sum(d["now"].values())
    r = run()
    assert r.returncode == 0 and "web cache" in r.stdout


def test_doctor_counts_the_web_cache_and_says_when_it_is_over_its_cap(tmp_path, monkeypatch):
    from archiver.app.doctor import _web_cache

    monkeypatch.setenv("ARCHIVER_HOME", str(tmp_path / "state"))
    c = _web_cache({"cfg": Config()})
    assert c.status == "ok" and "not created yet" in c.detail and c.data["bytes"] == 0
    _fill(tmp_path / "state" / "web-cache", n=3, size=20000)
    c = _web_cache({"cfg": Config()})
    assert c.status == "ok" and c.data["files"] == 3 and c.data["bytes"] == 60000
    assert c.data["max_bytes"] == 256 * 1024 * 1024 and "web-cache" in c.detail
    c = _web_cache({"cfg": Config(web={"cache_max_bytes": 50000})})
    assert c.status == "warn" and "over" in c.detail
    c = _web_cache({"cfg": Config(web={"cache_max_bytes": -5})})
    assert c.status == "warn" and "cache_max_bytes" in c.detail and c.data["bytes"] == 60000
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # (root can write anywhere: pretend)
    c = _web_cache({"cfg": Config()})
    assert c.status == "warn" and "served uncached" in c.detail
