"""`archiver doctor`: shows what is in use and says what is wrong, without creating anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def doctor(tmp_path, config: str | None, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), ARCHIVER_HOME=str(tmp_path / "state"), HOME=str(tmp_path / "home"))
    env.pop("ARCHIVER_CONFIG", None)
    args = [sys.executable, "-m", "archiver", "doctor", "--json", *extra]
    if config is not None:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(config)
        args += ["--config", str(cfg)]
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    return r, {c["name"]: c for c in json.loads(r.stdout)["checks"]}


def test_doctor_reports_config_vault_space_and_problems(tmp_path):
    (tmp_path / "home").mkdir()
    r, c = doctor(tmp_path, f"roots: [{tmp_path / 'photos'}]\nmin_free_bytes: {1 << 62}\n")
    assert r.returncode == 1  # a missing root and a full disk are failures
    assert c["config"]["status"] == "ok" and c["config"]["data"]["file"] == str(tmp_path / "c.yaml")
    assert c["roots"]["status"] == "fail" and "missing or not mounted" in c["roots"]["detail"]
    assert c["free space"]["status"] == "fail" and "free of" in c["free space"]["detail"]
    assert c["catalog"]["status"] == "ok" and "not created yet" in c["catalog"]["detail"]
    assert c["model"]["status"] == "ok" and c["model"]["data"]["backbone"] == "tiny"
    assert {"vault", "web cache", "policy", "gpu", "detectors", "open-writer check"} <= set(c)
    assert c["web cache"]["status"] == "ok" and c["web cache"]["data"]["dir"] == str(tmp_path / "state" / "web-cache")
    assert c["codecs"]["status"] == "ok"
    assert c["codecs"]["data"]["available"] == ["diffusion", "lossless", "avif", "jxl"]
    assert not (tmp_path / "state").exists()  # looking creates nothing

    (tmp_path / "photos").mkdir()
    r, c = doctor(tmp_path, f"roots: [{tmp_path / 'photos'}]\n")
    assert r.returncode == 0, r.stdout
    assert c["roots"]["status"] == c["free space"]["status"] == "ok"


def test_doctor_reports_a_broken_config_instead_of_failing(tmp_path):
    (tmp_path / "home").mkdir()
    r, c = doctor(tmp_path, "workers: [not a number\n")
    assert r.returncode == 1 and c["config"]["status"] == "fail" and "invalid YAML" in c["config"]["detail"]
    assert "Traceback" not in r.stderr


def test_doctor_warns_about_a_codec_this_installation_cannot_run(monkeypatch):
    """A Pillow without AVIF: the chain skips avif (next codec), and doctor says why."""
    from PIL import features

    from archiver.app.doctor import _codecs

    real = features.check
    monkeypatch.setattr(features, "check", lambda f, *a, **k: False if f == "avif" else real(f, *a, **k))
    c = _codecs({})
    why = "this Pillow cannot write AVIF (Pillow >= 11.3 wheels include libavif)"
    assert c.status == "warn" and c.data["unavailable"] == {"avif": why}
    assert "avif unavailable" in c.detail and "avif" not in c.data["available"]
