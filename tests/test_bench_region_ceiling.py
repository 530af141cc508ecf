"""bench/region_ceiling.py: the protected-region figures behind docs/benchmarks.md, measured with
the shipped backbone on a small picture (the Kodak run is the bench's own job)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from archiver.codecs.diffusion.backbones import tiny

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (tiny.WEIGHTS_DIR / tiny.WEIGHTS_FILE).is_file(), reason="no shipped tiny weights")


def _bench():
    spec = importlib.util.spec_from_file_location("region_ceiling", ROOT / "bench" / "region_ceiling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Policy:
    """Stands in for the default policy: diffusion, with one weak text candidate (or none)."""

    def __init__(self, action, boxes):
        self.action, self.boxes = action, boxes

    def decide(self, path, image=None):
        text = SimpleNamespace(regions=[], details={"weak_regions": self.boxes})
        return SimpleNamespace(action=self.action, protected_regions=self.boxes, evidence={"text": text})


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    yy, xx = np.mgrid[0:96, 0:128]
    a = np.stack([np.sin(xx / (3 + c)) * np.cos(yy / 5) * 70 + 120 + (xx > 64) * 40 for c in range(3)], -1)
    p = tmp_path_factory.mktemp("rc") / "p.png"
    Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(p)
    return p


def test_region_rows_ceiling_and_roi_factors(picture):
    import torch

    torch.set_num_threads(1)
    bench = _bench()
    backbone = tiny.load_tiny(device="cpu")
    row = bench.measure(picture, _Policy("diffusion", [(0, 0, 64, 48)]), backbone, 0.5, [1.0, 4.0], [100.0])
    assert row["regions"] == [{"box": [0, 0, 64, 48], "by": "text", "confirmed": False}]
    assert row["region_share"] == pytest.approx(0.25)
    plain, roi = row["at_bpp"]
    assert (plain["roi_factor"], roi["roi_factor"]) == (1.0, 4.0)
    assert roi["region_psnr_t0"] > plain["region_psnr_t0"] + 0.25  # finer steps in the region (+0.58 dB here)
    # no quantization is the ceiling: the finest encode gets close to it and not beyond
    best = row["at_quality"][0]["region_psnr_t0"]
    assert best <= row["ceiling"]["region_psnr"] + 0.1 and best > row["ceiling"]["region_psnr"] - 1.0
    assert bench.measure(picture, _Policy("lossless", [(0, 0, 64, 48)]), backbone, 0.5, [1.0], []) is None
    assert bench.measure(picture, _Policy("diffusion", []), backbone, 0.5, [1.0], []) is None
