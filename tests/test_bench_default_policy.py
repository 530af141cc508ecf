"""bench/default_policy.py, the issue-12 measurement (dry run vs real run of the shipped default
policy), on two small images from a read-only folder (as ../shared/data is): the copies must be
replaceable, and the summary must compare the dry run's prediction with what the catalog holds."""

from __future__ import annotations

import hashlib
import importlib.util
import stat
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "default_policy.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_default_policy", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_default_policy_bench_on_a_read_only_source(tmp_path):
    src = tmp_path / "src" / "small"
    src.mkdir(parents=True)
    y, x = np.mgrid[0:160, 0:200]
    for i in range(2):  # under 0.05 MP: the shipped policy's tiny-images rule (lossless, no detectors)
        a = np.stack([(x + 40 * i) % 256, y, (x + y) // 2], -1).astype(np.uint8)
        Image.fromarray(a).save(src / f"g{i}.png", compress_level=0)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    for p in [*src.iterdir(), src]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        s = _load().main(tmp_path / "out", [src])
    finally:
        for p in [src, *src.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert s["files"] == 2 and s["files_predicted"] == 2 and s["files_as_predicted"] == 2
    assert s["share_per_codec"] == {"lossless": 1.0}
    assert s["real_saved"] > 0.3 and s["predicted_saved"] == s["real_saved"] and s["prediction_error"] == 0.0
    # the sources are untouched; the copies were replaced by their lossless outputs
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()} == digests
    coll = tmp_path / "out" / "coll" / "small"
    assert sorted(p.name for p in coll.iterdir()) == ["g0.png.jxl", "g1.png.jxl"]  # standard JPEG XL (issue 11)
    assert all(p.stat().st_mode & stat.S_IWUSR for p in [coll, coll.parent])  # not only root may replace
