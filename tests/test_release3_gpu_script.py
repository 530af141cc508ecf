"""bench/release3_gpu.sh, the one command a GPU session runs, dry-run on the CPU with a tiny step
count: it trains every stage, resumes, and leaves what the device tool brings back (at most 8
files, none over 16 MiB) in $OUT, from which the weights reassemble exactly."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_dry_run_on_the_cpu(tmp_path):
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:272]
    for i in range(5):
        (data / f"set{i % 2}").mkdir(parents=True, exist_ok=True)
        base = np.stack([np.sin(xx / (4 + i) + c) * np.cos(yy / (6 + c)) for c in range(3)], -1)
        a = (base * 70 + 128 + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(a).save(data / f"set{i % 2}" / f"im{i}.png")
    env = dict(os.environ, DEVICE="cpu", DATA=str(data), RUN=str(tmp_path / "run"), OUT=str(tmp_path / "out"),
               EXTRA="--steps 2 --batch 2 --crop 64", PYTHON=sys.executable, THREADS="1",
               PYTHONPATH=str(ROOT))
    for _ in range(2):  # the second run resumes: every stage is already at its step count
        r = subprocess.run(["bash", str(ROOT / "bench" / "release3_gpu.sh")], env=env, capture_output=True,
                           text=True, timeout=1800)
        assert r.returncode == 0, r.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count('"event": "resumed"') == 3
    out = sorted((tmp_path / "out").iterdir())
    assert len(out) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in out)
    parts = sorted(p for p in out if p.name.startswith("tiny.safetensors.part"))
    whole = b"".join(p.read_bytes() for p in parts)
    assert hashlib.sha256(whole).hexdigest() == (tmp_path / "out" / "tiny.safetensors.sha256").read_text().split()[0]
    assert json.loads((tmp_path / "out" / "tiny.json").read_text())["vae"]["kind"] == "rd"
    assert json.loads((tmp_path / "out" / "curves.json").read_text())["runs"]["run"]["evaluations"] >= 2
