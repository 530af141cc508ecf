"""archiver bench: quality search, metrics sanity, runner outputs, the CLI, and honest reporting of
what could not be measured. Synthetic images only (two small ones, one rate) to stay fast."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from archiver import metrics
from archiver.bench import ours as ours_mod
from archiver.bench.codecs import CONVENTIONAL
from archiver.bench.measure import Fid, Lpips, measure
from archiver.bench.runner import BenchConfig, run_bench, texture_box
from archiver.app.main import main

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def synthetic(w=224, h=192, seed=0) -> Image.Image:
    """Smooth gradients + texture + an edge: compresses like a photo, not like noise or flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w * 200, y / h * 180, (x + y) / (w + h) * 160], -1)
    tex = 30 * np.sin(x / 3.0 + seed) * np.cos(y / 5.0)
    noise = rng.normal(0, 8, (h, w))
    a = base + (tex + noise)[..., None]
    a[h // 3: h // 2, w // 4: 3 * w // 4] = 240
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """MS-SSIM on tiny images is ~10x slower with 2 threads on a loaded 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def image_dir(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    synthetic(seed=1).save(d / "a.png")
    synthetic(200, 176, seed=2).save(d / "b.png")
    (d / "notes.txt").write_text("not an image, ignored by extension")
    return d


@pytest.mark.parametrize("codec", ["jpeg", "webp"])
def test_quality_search_lands_nearest_the_target(codec):
    img = synthetic()
    c = CONVENTIONAL[codec]
    px = img.width * img.height
    lowest = len(c.encode(img, c.qmin)) * 8 / px
    target = max(1.0, 1.5 * lowest)
    res = c.search(img, target)
    assert res.bpp == len(res.data) * 8 / px  # real file size, not an estimate
    assert abs(res.bpp - target) / target < 0.25
    # nearest among the neighbouring settings: one step either way is no closer
    for q in (res.quality - 1, res.quality + 1):
        if c.qmin <= q <= c.qmax:
            assert abs(len(c.encode(img, q)) * 8 / px - target) >= abs(res.bpp - target) - 1e-9
    assert c.decode(res.data).size == img.size
    assert len(res.tried) <= 10  # bisection, not a sweep


def test_unreachable_target_keeps_lowest_setting_and_reports_real_bpp():
    img = synthetic()
    c = CONVENTIONAL["jpeg"]
    res = c.search(img, 0.001)
    assert res.quality == c.qmin
    assert res.bpp > 0.001


def test_metrics_sane_on_identical_and_degraded_images():
    img = synthetic()
    assert metrics.psnr(img, img) == math.inf
    assert metrics.ms_ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    assert metrics.spectral_distance(img, img) == pytest.approx(0.0, abs=1e-9)
    blurred = img.resize((56, 48)).resize(img.size)
    assert metrics.psnr(img, blurred) < 40
    assert metrics.ms_ssim(img, blurred) < 0.99
    assert metrics.spectral_distance(img, blurred) > 0.1


def test_texture_box_finds_the_textured_region():
    a = np.full((200, 300, 3), 128, np.uint8)
    a[100:164, 200:264] = np.random.default_rng(0).integers(0, 255, (64, 64, 3))
    left, top, right, bottom = texture_box(Image.fromarray(a), 64)
    assert right - left == 64 and bottom - top == 64
    assert abs(left - 200) <= 11 and abs(top - 100) <= 11


def test_measure_reports_time_and_memory():
    m = measure(lambda: bytearray(64 * 2**20)[0])
    assert m.value == 0 and m.seconds >= 0 and m.peak_mib >= 0


def _strict_json(text):
    def bad(c):
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(text, parse_constant=bad)


def test_runner_writes_json_markdown_plots_and_crops(image_dir, tmp_path):
    out = tmp_path / "out"
    cfg = BenchConfig(images=image_dir, bpps=(0.8,), codecs=("jpeg", "webp"), out=out, crop_images=1,
                      crop_size=96, show_progress=False, skip={"fid"})
    result = run_bench(cfg)
    data = _strict_json((out / "results.json").read_text())
    assert data["config"]["n_images"] == 2
    recs = data["records"]
    assert {(r["image"], r["codec"]) for r in recs} == {(i, c) for i in ("a.png", "b.png") for c in ("jpeg", "webp")}
    for r in recs:
        for f in ("bpp", "bytes", "psnr", "ms_ssim", "spectral_distance", "encode_s_per_mp", "decode_s_per_mp",
                  "encode_peak_mib", "decode_peak_mib", "quality", "target_bpp"):
            assert r[f] is not None, f
        assert r["bpp"] == pytest.approx(r["bytes"] * 8 / (r["width"] * r["height"]))
        assert 0 < r["ms_ssim"] <= 1 and r["psnr"] > 15 and r["spectral_distance"] >= 0
        assert r["lpips"] is None
    assert data["metrics"]["fid"].startswith("not computed")
    summary = {(s["codec"], s["target_bpp"]): s for s in data["summary"]}
    assert summary[("jpeg", 0.8)]["n"] == 2
    md = (out / "summary.md").read_text()
    assert "| jpeg | 2 |" in md and "| webp | 2 |" in md and "## 0.8 bpp" in md
    assert "LPIPS:" in md and "FID: not computed" in md
    plots = sorted(p.name for p in out.glob("rate_*.png"))
    assert plots == ["rate_ms_ssim.png", "rate_psnr.png", "rate_spectral_distance.png"]
    for p in out.glob("rate_*.png"):
        assert Image.open(p).size[0] > 300
    crops = list((out / "crops").glob("*.png"))
    assert [c.name for c in crops] == ["a_0.8bpp.png"]
    sheet = Image.open(crops[0])
    assert sheet.width >= 3 * 96 * 2  # original + 2 codecs, upscaled 2x
    assert result["unavailable"] == {} and data["partial"] is False

    # a run cut short leaves results.json with the finished images; --render makes the report from it
    from archiver.bench.report import render

    data.update(partial=True, images_done=1, records=[r for r in recs if r["image"] == "a.png"])
    render(data, out)
    assert "Partial run: 1 of 2 images" in (out / "summary.md").read_text()
    assert _strict_json((out / "results.json").read_text())["summary"][0]["n"] == 1


class FakeOurs:
    """Stands in for the diffusion codec: 'diffusion' decode adds texture back, steps=0 blurs."""

    def __init__(self, *a, **k):
        pass

    def describe(self):
        return {"id": "fake"}

    def encode(self, img, bpp, steps):
        from types import SimpleNamespace

        res = CONVENTIONAL["jpeg"].search(img.rgb, bpp)
        return SimpleNamespace(data=res.data, bpp=res.bpp, params={"t": 123, "quality": float(res.quality), "steps": steps})

    def decode(self, data, steps):  # None: as the header says (with diffusion); 0: none
        im = CONVENTIONAL["jpeg"].decode(data)
        return im if steps != 0 else im.resize((im.width // 4, im.height // 4)).resize(im.size)

    def autoencode(self, rgb):
        return rgb.copy()


def test_ours_entries_are_measured_separately(monkeypatch, image_dir, tmp_path):
    monkeypatch.setattr(ours_mod, "Ours", FakeOurs)
    cfg = BenchConfig(images=image_dir, bpps=(0.8,), codecs=("ours", "ours-nodiff", "ae", "jpeg", "webp"),
                      steps=3, out=tmp_path / "o", crop_images=1, crop_size=64, show_progress=False, skip={"lpips", "fid"})
    r = run_bench(cfg)
    by = {(x["image"], x["codec"]): x for x in r["records"]}
    ours, nodiff, ae = by[("a.png", "ours")], by[("a.png", "ours-nodiff")], by[("a.png", "ae")]
    assert ours["bytes"] == nodiff["bytes"]  # the very same bitstream
    assert ours["steps"] == 3 and nodiff["steps"] == 0 and ours["t"] == 123
    assert ae["bpp"] is None and ae["target_bpp"] is None and ae["psnr"] is None  # identical -> null, not Infinity
    assert nodiff["spectral_distance"] > ours["spectral_distance"]
    (v,) = r["verdicts"]
    assert v["closer_spectrum_than_nodiff"] is True
    assert "beats_jpeg_ms_ssim" in v and "beats_webp_ms_ssim" in v
    assert v["wins_vs_nodiff_spectral"] == [2, 2] and v["wins_vs_jpeg_ms_ssim"][1] == 2
    md = (tmp_path / "o" / "summary.md").read_text()
    assert "## Verdicts" in md and "Autoencoder alone" in md
    assert "closer to the original's spectrum than ours-nodiff" in md


class BrokenOurs(FakeOurs):
    def decode(self, data, steps):
        if steps == 0:
            raise RuntimeError("boom")
        return super().decode(data, steps)


def test_a_failing_codec_is_recorded_and_the_run_goes_on(monkeypatch, image_dir):
    monkeypatch.setattr(ours_mod, "Ours", BrokenOurs)
    r = run_bench(BenchConfig(images=image_dir, bpps=(0.8,), codecs=("ours", "ours-nodiff", "jpeg"), crop_images=0,
                              show_progress=False, skip={"lpips", "fid"}))
    assert [f["error"] for f in r["failures"]] == ["RuntimeError: boom"] * 2
    assert {x["codec"] for x in r["records"]} == {"ours", "jpeg"}


def test_unavailable_codec_is_reported_not_crashed(monkeypatch, image_dir):
    def refuse(*a, **k):
        raise ours_mod.OursUnavailable("no weights here")

    monkeypatch.setattr(ours_mod, "Ours", refuse)
    r = run_bench(BenchConfig(images=image_dir, bpps=(0.8,), codecs=("ours", "jpeg"), crop_images=0,
                              show_progress=False, skip={"fid"}))
    assert r["unavailable"] == {"ours": "no weights here"}
    assert {x["codec"] for x in r["records"]} == {"jpeg"}
    assert r["verdicts"] == []


def test_lpips_and_fid_absence_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHIVER_LPIPS_ALEXNET", str(tmp_path / "missing-alexnet.pth"))
    monkeypatch.setenv("ARCHIVER_FID_WEIGHTS", str(tmp_path / "missing-inception.pth"))
    for cls in (Lpips, Fid):
        model, why = cls.load()
        assert model is None
        assert why.startswith("not computed (")
        assert "missing-" in why or "not installed" in why


def test_lpips_computed_from_local_weights(monkeypatch, tmp_path):
    pytest.importorskip("lpips")
    torch = pytest.importorskip("torch")
    from torchvision.models import alexnet

    path = tmp_path / "alexnet.pth"
    torch.manual_seed(0)
    torch.save(alexnet().state_dict(), path)  # random weights: only the loading path is tested
    monkeypatch.setenv("ARCHIVER_LPIPS_ALEXNET", str(path))
    model, why = Lpips.load()
    assert model is not None and why.startswith("computed")
    img = synthetic(96, 96)
    assert model(img, img) == pytest.approx(0.0, abs=1e-6)
    assert model(img, img.resize((24, 24)).resize((96, 96))) > 0


def test_cli_json(image_dir):
    res = CliRunner().invoke(main, ["bench", str(image_dir), "--codecs", "jpeg", "--bpp", "0.8", "--crops", "0", "--json"])
    assert res.exit_code == 0, res.output
    data = _strict_json(res.stdout)
    assert len(data["records"]) == 2 and data["summary"][0]["codec"] == "jpeg"
    assert data["metrics"]["lpips"].startswith(("not computed", "computed"))


def test_cli_human(image_dir):
    res = CliRunner().invoke(main, ["bench", str(image_dir), "--codecs", "webp", "--bpp", "0.8", "--crops", "0"])
    assert res.exit_code == 0, res.output
    assert "webp" in res.stdout and "LPIPS:" in res.stdout and "FID:" in res.stdout


@pytest.mark.parametrize("case", ["missing", "empty", "badcodec", "badbpp"])
def test_cli_clear_errors(tmp_path, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = {
        "missing": [str(tmp_path / "nope")],
        "empty": [str(empty)],
        "badcodec": [str(empty), "--codecs", "jpeg,gif"],
        "badbpp": [str(empty), "--bpp", "0.1,abc"],
    }[case]
    res = CliRunner().invoke(main, ["bench", *args])
    want = {"missing": (3, "no such directory"), "empty": (3, "no images found"),
            "badcodec": (2, "unknown gif"), "badbpp": (2, "--bpp")}[case]
    assert res.exit_code == want[0], res.output
    assert want[1] in res.output
    assert "Traceback" not in res.output


@pytest.mark.data
def test_one_kodak_image_jpeg():
    if not KODAK.is_dir():
        pytest.skip(f"Kodak data not found at {KODAK} (needs ../shared/data/kodak)")
    r = run_bench(BenchConfig(images=KODAK, bpps=(0.3,), codecs=("jpeg",), limit=1, crop_images=0,
                              show_progress=False, skip={"fid", "lpips"}))
    (rec,) = r["records"]
    assert abs(rec["bpp"] - 0.3) < 0.03 and rec["psnr"] > 22


def test_real_codec_contract_with_untrained_tiny(image_dir):
    """The bench drives the project's real pipeline (untrained weights: plumbing only, not quality)."""
    pytest.importorskip("archiver.codecs.diffusion.pipeline")
    r = run_bench(BenchConfig(images=image_dir, bpps=(0.5,), codecs=("ours", "ours-nodiff", "ae"), limit=1,
                              backbone="tiny-random", crop_images=0, show_progress=False, skip={"lpips", "fid"}))
    assert r["unavailable"] == {}
    by = {x["codec"]: x for x in r["records"]}
    assert set(by) == {"ours", "ours-nodiff", "ae"}
    assert by["ours"]["bytes"] == by["ours-nodiff"]["bytes"] and by["ours-nodiff"]["steps"] == 0
    assert abs(by["ours"]["bpp"] - 0.5) / 0.5 < 0.35
    assert r["environment"]["backbone"]["id"] == "tiny"
