"""The dashboard in a real browser: headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium) against ``archiver serve`` running as its own process, on a catalog made by
archiving a few images with the real diffusion codec (the shipped tiny weights).

It loads the overview, searches, opens a file page, checks from the DOM *and* from screenshots
that the original and the decoded image both render (pixel for pixel at 1:1), zooms, and
restores the original with the token. Screenshots go to ``$ARCHIVER_SCREENSHOTS`` when set.
CI installs the browser (.ci/run); there a missing browser is a failure, not a skip.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archiver.testing.web import TOKEN, add_avif, make_collection

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
#: the flags a closed network and a root CI need (no sandbox, no GPU, nothing phoned home)
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--force-device-scale-factor=1", "--window-size=1400,1800")


def _need_browser():
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if not p]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        msg = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs them: their absence is a broken CI, not a reason to skip
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _need_browser()
    from archiver.codecs import CodecSettings, get_codec

    tmp = tmp_path_factory.mktemp("webe2e")
    ctx, ids = make_collection(tmp, codec=get_codec("diffusion", CodecSettings(device="cpu")))
    ids["avif"] = add_avif(ctx, tmp)
    port = _free_port()
    cfg = tmp / "archiver.yaml"
    cfg.write_text(json.dumps({"catalog_url": ctx.catalog.url, "vault_dir": str(tmp / "vault"), "device": "cpu",
                               "web": {"token": TOKEN, "port": port}}))
    env = dict(os.environ, ARCHIVER_HOME=str(tmp / "state"), PYTHONPATH=os.pathsep.join(sys.path))
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "archiver", "serve", "--config", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/api/status", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"archiver serve did not come up: {(tmp / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.2)
    yield url, ctx, ids, tmp
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in CHROME_FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    drv = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _shot(drv, name: str, tmp: Path, element=None) -> Image.Image:
    png = (element or drv).screenshot_as_png if element is not None else drv.get_screenshot_as_png()
    out = tmp / f"{name}.png"
    out.write_bytes(png)
    if os.environ.get("ARCHIVER_SCREENSHOTS"):
        Path(os.environ["ARCHIVER_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(os.environ["ARCHIVER_SCREENSHOTS"]) / out.name)
    return Image.open(io.BytesIO(png)).convert("RGB")


def _wait(drv, js: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        v = drv.execute_script(js)
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {js}")
        time.sleep(0.2)


def _diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b.convert("RGB"), dtype=np.int16)).mean())


def test_dashboard_in_chromium(site, browser):
    from selenium.webdriver.common.by import By

    url, ctx, ids, tmp = site
    drv = browser
    # 1. the overview
    drv.get(url + "/")
    assert drv.find_element(By.TAG_NAME, "h1").text == "Overview"
    assert drv.find_element(By.ID, "total-files").text == "6"
    assert drv.find_elements(By.CSS_SELECTOR, "#plot svg")
    assert "broken.jpg" in drv.find_element(By.ID, "problems").text
    _shot(drv, "overview", tmp)

    # 2. search by path, as a person would: type, submit, follow the result
    drv.find_element(By.LINK_TEXT, "Files").click()
    box = drv.find_element(By.NAME, "path")
    box.send_keys("forest")
    drv.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
    _wait(drv, "return location.search.includes('path=forest')")
    rows = drv.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert len(rows) == 1 and "forest.jpg" in rows[0].text and "committed" in rows[0].text
    rows[0].find_element(By.TAG_NAME, "a").click()

    # 3. the file page: both pictures load (DOM), the region box is drawn
    _wait(drv, "return document.getElementById('img-original') !== null")
    assert drv.current_url.endswith(f"/files/{ids['forest']}")
    sizes = _wait(drv, """
        const o = document.getElementById('img-original'), d = document.getElementById('img-decoded');
        return o.complete && d.complete && o.naturalWidth > 0 && d.naturalWidth > 0
            ? [o.naturalWidth, o.naturalHeight, d.naturalWidth, d.naturalHeight] : null;""")
    assert sizes == [192, 128, 192, 128]
    assert len(drv.find_elements(By.CSS_SELECTOR, "#canvas .region")) == 1
    _shot(drv, "file-page", tmp)

    # ... and from screenshots: at 1:1, toggle mode shows each picture pixel for pixel
    original = Image.open(io.BytesIO(urllib.request.urlopen(f"{url}/api/files/{ids['forest']}/original").read()))
    decoded = Image.open(io.BytesIO(urllib.request.urlopen(f"{url}/api/files/{ids['forest']}/decoded").read()))
    assert _diff(original.convert("RGB"), decoded) > 0.5  # they differ, so the screenshots can tell them apart
    drv.find_element(By.ID, "show-regions").click()  # boxes off for the pixel comparison
    drv.find_element(By.CSS_SELECTOR, "[data-zoom='1']").click()
    drv.find_element(By.CSS_SELECTOR, "[data-mode='toggle']").click()
    canvas = drv.find_element(By.ID, "canvas")
    shot_o = _shot(drv, "canvas-original", tmp, canvas)
    drv.find_element(By.ID, "swap").click()
    shot_d = _shot(drv, "canvas-decoded", tmp, canvas)
    assert shot_o.size == shot_d.size == (192, 128)
    assert _diff(shot_o, original) < 1.5 and _diff(shot_d, decoded) < 1.5
    assert _diff(shot_o, decoded) > _diff(shot_o, original) and _diff(shot_d, original) > _diff(shot_d, decoded)

    # zoom 2:1 doubles the picture; the slider splits it: original left, decoded right
    drv.find_element(By.CSS_SELECTOR, "[data-zoom='2']").click()
    assert drv.execute_script("return document.getElementById('canvas').getBoundingClientRect().width") == 384
    drv.find_element(By.CSS_SELECTOR, "[data-mode='slider']").click()
    drv.find_element(By.ID, "show-regions").click()
    drv.execute_script("const s = document.getElementById('split'); s.value = 30; s.dispatchEvent(new Event('input'));")
    assert "70%" in drv.execute_script("return document.getElementById('img-original').style.clipPath")
    _shot(drv, "file-page-2x-slider", tmp)

    # 4. restore with the token (the form carries the CSRF token)
    row_path = Path(drv.find_element(By.CSS_SELECTOR, "p.path").text)
    assert not row_path.exists()
    drv.find_element(By.ID, "token").send_keys(TOKEN)
    drv.find_element(By.ID, "restore").click()
    result = _wait(drv, "const r = document.getElementById('restore-result'); return r && r.textContent;")
    assert "restored" in result and "vault" in result
    with ctx.catalog.session() as s:
        from archiver.catalog.models import FileVersion

        sha = s.get(FileVersion, ids["forest"]).sha256
    assert hashlib.sha256(row_path.read_bytes()).hexdigest() == sha
    _shot(drv, "restored", tmp)


def _loaded_images(drv, css: str) -> list:
    """Once every picture matching ``css`` has loaded or failed: [naturalWidth, ...] (0 = failed)."""
    return _wait(drv, f"""
        const imgs = [...document.querySelectorAll({json.dumps(css)})];
        return imgs.every((i) => i.complete) ? imgs.map((i) => i.naturalWidth) : null;""")


def test_issue26_pages_in_chromium(site, browser):
    """The points of issue 26 as a person sees them: the chart, one problem line per file, the
    grid of thumbnails and its filters, the AVIF label, evidence and events as tables, missing
    and forgotten files, the decoder loaded at start, and no flood of queue warnings."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from archiver.work.forget import forget
    from archiver.work.verify import verify

    url, ctx, ids, tmp = site
    drv = browser
    # the decoder was loaded on a thread when the server started
    _wait(drv, "return true")
    deadline = time.monotonic() + 120
    while json.loads(urllib.request.urlopen(url + "/api/status").read())["decoder"] != "ready":
        assert time.monotonic() < deadline, "the decoder was not loaded at start"
        time.sleep(0.5)

    # the overview: everything was archived today, so the chart shows that day's two totals
    drv.get(url + "/")
    plot = drv.find_element(By.CSS_SELECTOR, "#plot svg").get_attribute("innerHTML")
    assert "all archived on" in plot
    problems = drv.find_element(By.ID, "problems")
    lines = [r.text for r in problems.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert sum("wall.jpg" in t for t in lines) == 1, lines  # its two fallback events: one line
    _shot(drv, "overview-issue26", tmp)

    # the grid: a thumbnail per file, filtered on the server by rule
    drv.find_element(By.LINK_TEXT, "Files").click()
    drv.find_element(By.ID, "view-grid").click()
    _wait(drv, "return location.search.includes('view=grid')")
    cards = drv.find_elements(By.CSS_SELECTOR, "#grid li.cardf")
    assert len(cards) == len(ids)
    widths = _loaded_images(drv, "#grid .thumb img")
    assert len([w for w in widths if w > 0]) == len(ids) - 1  # all but the corrupt file
    assert all(w <= 256 for w in widths)
    assert "no picture" in drv.find_element(By.ID, "grid").text  # broken.jpg says so in words
    _shot(drv, "grid", tmp)
    Select(drv.find_element(By.NAME, "rule")).select_by_visible_text("small")
    drv.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
    _wait(drv, "return location.search.includes('rule=small')")
    assert "view=grid" in drv.current_url
    cards = drv.find_elements(By.CSS_SELECTOR, "#grid li.cardf")
    assert len(cards) == 1 and "sky.jpg" in cards[0].text and "avif" in cards[0].text

    # the AVIF file's page: a conventional lossy approximation, not a generative one
    cards[0].find_element(By.TAG_NAME, "a").click()
    _wait(drv, "return document.getElementById('quality') !== null")
    gives = drv.find_element(By.ID, "restore-gives").text
    assert "conventional lossy, AVIF q" in gives and "generative" not in gives
    assert _loaded_images(drv, "#canvas img") == [160, 0]  # the decoded AVIF; the original was replaced
    _shot(drv, "avif-quality", tmp, drv.find_element(By.ID, "quality"))

    # evidence and events: tables and lists; the raw JSON only behind its toggle
    drv.get(f"{url}/files/{ids['strict']}")
    evidence = drv.find_element(By.ID, "evidence")
    assert [r.find_element(By.TAG_NAME, "td").text for r in evidence.find_elements(By.CSS_SELECTOR, "tbody tr")] == \
        ["faces", "text"]
    events = drv.find_element(By.ID, "events")
    assert '{"' not in evidence.text and '{"' not in events.text and "quality guard" in events.text
    raw = drv.find_element(By.CSS_SELECTOR, "details.raw pre")
    assert not raw.is_displayed()
    drv.find_element(By.CSS_SELECTOR, "details.raw summary").click()
    assert raw.is_displayed() and '"faces"' in raw.text
    drv.execute_script("arguments[0].scrollIntoView()", events)
    _shot(drv, "evidence", tmp, evidence)
    _shot(drv, "events", tmp, events)

    # a lost file: verify finds it missing, the overview says so; forgotten, it says that
    with ctx.catalog.read_session() as s:
        from archiver.catalog.models import FileVersion

        Path(s.get(FileVersion, ids["graphic"]).compressed_path).unlink()
    verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs, decode=False)
    drv.get(url + "/")
    line = next(r for r in drv.find_elements(By.CSS_SELECTOR, "#problems tbody tr") if "chart.png" in r.text)
    assert "missing" in line.text and "compressed file missing" in line.text
    forget(ctx.catalog, [str(ids["graphic"])], vault=ctx.vault, reason="disk failed")
    drv.get(url + "/")
    lines = [r.text for r in drv.find_elements(By.CSS_SELECTOR, "#problems tbody tr") if "chart.png" in r.text]
    assert len(lines) == 1 and "forgotten" in lines[0] and "disk failed" in lines[0]
    _shot(drv, "problems", tmp, drv.find_element(By.ID, "problems"))

    # the server's terminal: no line per waiting request
    log = (tmp / "serve.log").read_text()
    assert "Task queue depth is" not in log and log.count("queue depth up to") <= 1, log[-2000:]
    assert "decoder not loaded at start" not in log, log[-2000:]  # the warm-up really loaded the codec
