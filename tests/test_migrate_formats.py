"""A folder as phones and cameras leave it (JPEG, PNG, HEIC, DNG, TIFF, GIF, and a note): the dry run
and the real run say what they took and what they did not, by type and why; the raw file is kept
untouched; a HEIC comes back from the vault byte for byte."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from PIL import Image

from archiver.testing.catalog import photo_bytes, write_jpeg, write_png
from archiver.testing.formats import write_dng, write_heic
from test_service_helpers import archiver_in_subprocess

ROOT = Path(__file__).resolve().parent.parent

POLICY = """
version: 1
name: formats
defaults:
  target: good
  original: vault
  retention_days: 30
rules:
  - name: phones
    when:
      path: ["**/*.heic"]
    action: best
    among: [jxl]
default:
  action: lossless
"""


def test_a_mixed_folder_reports_what_it_took_and_what_it_did_not(tmp_path):
    photos = tmp_path / "photos"
    write_jpeg(photos / "a.jpg", seed=1, size=(96, 64))
    write_png(photos / "b.png", seed=2, size=(96, 64))
    heic = write_heic(photos / "phone.heic", seed=3, size=(256, 192), quality=98)
    dng = write_dng(photos / "camera.dng")
    Image.open(io.BytesIO(photo_bytes(4, (96, 64)))).save(photos / "scan.tif")
    Image.open(io.BytesIO(photo_bytes(5, (96, 64)))).convert("P").save(photos / "anim.gif")
    (photos / "notes.txt").write_text("shopping list")
    (photos / "broken.cr2").write_bytes(b"II*\x00 not a raw file" * 8)
    heic_bytes, dng_bytes = heic.read_bytes(), dng.read_bytes()
    (tmp_path / "p.yaml").write_text(POLICY)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"catalog_url: sqlite:///{tmp_path / 'cat.sqlite'}\nvault_dir: {tmp_path / 'vault'}\n"
                   f"policy: {tmp_path / 'p.yaml'}\nworkers: 1\n")
    env = dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))

    run = archiver_in_subprocess(cfg, env)

    expected = [{"type": ".cr2", "reason": "skipped: camera raw that LibRaw cannot read", "files": 1},
                {"type": ".dng", "reason": "camera raw: kept untouched", "files": 1},
                {"type": ".txt", "reason": "not an image", "files": 1}]

    r = run("migrate", photos, "--dry-run", "--executor", "thread", "--json")
    plan = json.loads(r.stdout)
    assert r.returncode == 0 and plan["files"] == 6  # jpg png heic dng tif gif taken; the .cr2 could not be read
    assert [Path(u["path"]).name for u in plan["unreadable"]] == ["broken.cr2"]
    assert [{k: g[k] for k in ("type", "reason", "files")} for g in plan["not_taken"]] == expected
    assert {Path(p["path"]).name: p["codec"] for p in plan["predictions"]}["camera.dng"] == "keep"

    r = run("migrate", photos, "--executor", "thread", "--json")
    rep = json.loads(r.stdout)
    assert r.returncode == 0 and [{k: g[k] for k in ("type", "reason", "files")} for g in rep["not_taken"]] == expected
    by_name = {Path(o["path"]).name: o for o in rep["outcomes"]}
    assert set(by_name) == {"a.jpg", "b.png", "phone.heic", "camera.dng", "scan.tif", "anim.gif", "broken.cr2"}
    assert by_name["camera.dng"]["action"] == "keep" and by_name["camera.dng"]["reason"].startswith("camera raw: kept untouched")
    assert by_name["phone.heic"]["action"] == "jxl" and by_name["phone.heic"]["status"] == "committed"
    assert dng.read_bytes() == dng_bytes and (photos / "notes.txt").exists() and not heic.exists()

    show = json.loads(run("show", dng, "--json").stdout)["versions"][-1]
    assert show["reasons"][0].startswith("camera raw: kept untouched (DNG)")

    r = run("restore", heic)  # from the vault: the very bytes
    assert r.returncode == 0 and "[vault, bytes]" in r.stdout and heic.read_bytes() == heic_bytes

    (photos / "clip.mov").write_bytes(b"\0" * 64)
    r = run("migrate", photos, "--executor", "thread")  # a rerun says what it leaves alone, in words too
    assert r.returncode == 0 and "7 handled by earlier runs" in r.stdout
    assert "\n  not taken: 1 .mov (video, not an image), 1 .txt (not an image)\n" in r.stdout
