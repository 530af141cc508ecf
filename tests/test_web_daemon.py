"""``web.with_daemon``: the real daemon serves the dashboard too, which shows it running, sees
what it archives, and goes away with it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from test_service_helpers import (Daemon, catalog_rows, committed_paths, free_port, png_bytes, queue_rows, setup_env,
                                  wait_until)


def _get(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def test_daemon_serves_the_dashboard_and_writes_previews_it_never_archives(tmp_path):
    port = free_port()
    e = setup_env(tmp_path, web={"with_daemon": True, "port": port}, preview={"size": 32})
    d = Daemon(e).ready()
    base = f"http://127.0.0.1:{port}"
    try:
        d.wait_log("dashboard serving", 30)
        (e["root"] / "a.png").write_bytes(png_bytes(1, 48))
        wait_until(lambda: str(e["root"] / "a.png") in committed_paths(e["home"]), 60, what="file archived")
        status = _get(base + "/api/status")
        assert status["daemon"]["running"] is True and status["daemon"]["pid"] == d.proc.pid
        assert status["writable"] is False  # no token configured: read-only
        assert _get(base + "/api/overview")["total"]["files"] == 1
        html = urllib.request.urlopen(base + "/", timeout=10).read().decode()
        assert f"running (pid {d.proc.pid})" in html
        preview = e["root"] / "a.png.preview.webp"
        wait_until(preview.is_file, 30, what="preview written")
        (e["root"] / "b.png").write_bytes(png_bytes(2, 48))  # one more file, after the preview appeared
        wait_until(lambda: str(e["root"] / "b.png") in committed_paths(e["home"]), 60, what="second file archived")
        assert str(preview) not in {r["path"] for r in catalog_rows(e["home"])}
        assert str(preview) not in {r["path"] for r in queue_rows(e["home"])}
    finally:
        assert d.stop() == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "/api/status", timeout=3)


def test_bad_web_setting_stops_the_daemon_with_a_clear_error(tmp_path):
    import subprocess
    import sys

    e = setup_env(tmp_path, web={"with_daemon": True, "token": "short"})
    r = subprocess.run([sys.executable, "-m", "archiver", "daemon", "--config", str(e["config"])], env=e["env"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "web.token must be a string of at least 16 characters" in r.stderr
    assert "Traceback" not in r.stderr
