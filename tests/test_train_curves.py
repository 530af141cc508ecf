"""Learning curves (archiver_train.curves) and the travelling data pack (archiver_train.pack)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from archiver_train import curves, pack
from archiver_train import rd as RD

ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))


def _log(path, points):
    """A train.log whose rd evaluations improve by 1 dB per decade of pixels."""
    with open(path / "train.log", "w") as f:
        for step, px in points:
            rec = {"stage": "rd", "step": step, "event": "eval", "pixels": px}
            for s, b in ((0.5, 0.6), (1, 0.3), (2, 0.12)):
                rec[f"val_bpp_s{s:g}"] = b
                rec[f"val_psnr_s{s:g}"] = 20 + math.log10(max(px, 1)) - 2 * s
            f.write(json.dumps(rec) + "\n")
        f.write(json.dumps({"stage": "rd", "step": 1, "loss": 1.0}) + "\n")


def test_psnr_at_interpolates_in_log_rate_and_reaches_only_a_little_beyond():
    rec = {"val_bpp_s1": 0.1, "val_psnr_s1": 25.0, "val_bpp_s0.5": 0.4, "val_psnr_s0.5": 29.0}
    assert curves.psnr_at(rec, 0.2) == pytest.approx(27.0)  # halfway in log(bpp)
    assert curves.psnr_at(rec, 0.1) == pytest.approx(25.0)
    assert curves.psnr_at(rec, 0.45) == pytest.approx(29.0 + 4.0 * math.log(0.45 / 0.4) / math.log(4))
    assert curves.psnr_at(rec, 0.05) is None and curves.psnr_at(rec, 0.6) is None


def test_extrapolation_finds_the_pixels_a_target_needs(tmp_path):
    _log(tmp_path, [(i, int(10 ** (6 + i / 4))) for i in range(12)])
    evals = curves.load_evals(tmp_path)
    assert len(evals) == 12
    # at 0.3 bpp (the s = 1 point) PSNR = 18 + log10(pixels): 30 dB needs 1e12 pixels
    ex = curves.extrapolate(evals, 0.3, 30.0, mpx_per_s=100.0)
    assert ex["fit"]["b_per_decade"] == pytest.approx(1.0)
    assert ex["pixels_needed"] == pytest.approx(1e12, rel=1e-6)
    assert ex["gpu_minutes"] == pytest.approx(1e12 / 100e6 / 60, rel=1e-6)


def test_cli_plots_and_reports(tmp_path):
    from archiver_train.curves import main

    _log(tmp_path, [(i, int(10 ** (6 + i / 4))) for i in range(6)])
    png = tmp_path / "c.png"
    r = CliRunner().invoke(main, [str(tmp_path), "--png", str(png), "--target-psnr", "25", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["runs"][tmp_path.name]["evaluations"] == 6 and res["extrapolation"]["pixels_needed"] > 0
    assert Image.open(png).size[0] > 500
    # both panels hold curves (the bpp panel was once left empty when no baseline was given):
    # coloured (non-grey) pixels inside each half of the figure
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 60
    half = rgb.shape[1] // 2
    assert coloured[:, :half].sum() > 200 and coloured[:, half:].sum() > 200
    r = subprocess.run([sys.executable, "-m", "archiver_train.curves", str(tmp_path / "nowhere")],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and r.stderr.strip().endswith("no train.log") and "Traceback" not in r.stderr


def test_pack_keeps_the_validation_images_first_and_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(RD, "N_VAL", 2)
    monkeypatch.setattr(RD, "VAL_SIDE", 64)
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for folder, n in (("a", 4), ("b", 6)):
        (src / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (70, 80, 3), dtype=np.uint8)).save(src / folder / f"{i}.png")
    size = (src / "a" / "0.png").stat().st_size
    p = pack.plan(src, max_bytes=int(5.5 * size), first=("b",))
    assert len(p["files"]) == 5 and p["files"][:2] == p["validation"]
    assert all(f.startswith("b/") for f in p["files"][2:])  # then the --first folder
    assert pack.plan(src, max_bytes=10**9, validation_only=True)["files"] == p["validation"]
    r = CliRunner().invoke(pack.main, [str(src), str(tmp_path / "out"), "--max-mb", str(5.5 * size / 1e6),
                                       "--first", "b", "--json"])
    assert r.exit_code == 0, r.output
    copied = sorted(q.relative_to(tmp_path / "out").as_posix() for q in (tmp_path / "out").rglob("*.png"))
    assert copied == sorted(p["files"])
    assert (tmp_path / "out" / p["files"][0]).read_bytes() == (src / p["files"][0]).read_bytes()
    r = CliRunner().invoke(pack.main, [str(src), str(tmp_path / "val"), "--validation-only"])
    assert r.exit_code == 0 and sorted(q.name for q in (tmp_path / "val").iterdir()) == sorted(
        n.replace("/", "__") for n in p["validation"])
    r = subprocess.run([sys.executable, "-m", "archiver_train.pack", str(src), str(tmp_path / "out")],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "not empty" in r.stderr and "Traceback" not in r.stderr
