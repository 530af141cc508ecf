"""bench/release_compare.py, the release-3 ship measurement: a model's figures at a rate come from
each image's own curve (log-bpp interpolation, never extrapolated) and every codec in a table is
averaged over the same images."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "release_compare.py"


@pytest.fixture(scope="module")
def rc():
    spec = importlib.util.spec_from_file_location("release_compare", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _model_point(image, codec, q, bpp, psnr):
    return {"image": image, "codec": codec, "quality": q, "target_bpp": None, "bpp": bpp, "psnr": psnr,
            "ms_ssim": psnr / 30, "spectral_distance": 1.0, "nodiff_psnr": psnr + 1, "nodiff_ms_ssim": 0.9,
            "nodiff_spectral_distance": 2.0, "decode_s": 1.0, "decode_cpu_s": 2.0, "pixels": 1_000_000}


def test_interpolates_in_log_rate_and_never_extrapolates(rc):
    pts = [(0.05, 20.0), (0.2, 26.0), (0.4, 28.0)]
    assert rc._interp(pts, 0.1) == pytest.approx(23.0)  # halfway between 0.05 and 0.2 in log(bpp)
    assert rc._interp(pts, 0.3) == pytest.approx(26.0 + 2.0 * math.log(1.5) / math.log(2))
    assert rc._interp(pts, 0.5) is None and rc._interp(pts, 0.04) is None


def test_tables_pair_the_images_and_read_earlier_bench_runs(rc, tmp_path):
    recs = [_model_point("a.png", "r3", q, b, p) for q, b, p in ((38, 0.05, 20), (50, 0.2, 26), (62, 0.4, 28))]
    # b.png's curve stops short of 0.3 bpp: it drops out of that rate for every codec
    recs += [_model_point("b.png", "r3", q, b, p) for q, b, p in ((38, 0.08, 22), (50, 0.25, 27))]
    recs += [_model_point("a.png", "r2", q, b, p) for q, b, p in ((38, 0.06, 21), (62, 0.5, 27))]
    (tmp_path / "points.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    bench = tmp_path / "results.json"
    bench.write_text(json.dumps({"records": [
        {"image": i, "codec": "webp", "target_bpp": b, "bpp": b, "psnr": 25.0, "ms_ssim": 0.9, "spectral_distance": 0.5}
        for i in ("a.png", "b.png") for b in (0.1, 0.2, 0.3)]}))
    res = rc.summarize([tmp_path], bench_results=(f"old={bench}",), alias={"r3": "r3@1"})
    # r2 has only a.png: every codec's row at each rate averages a.png alone
    assert res["images"] == {"0.1": ["a.png"], "0.2": ["a.png"], "0.3": ["a.png"]}
    row = res["rates"]["0.1"]
    assert set(row) == {"r3@1", "r2", "old:webp"} and row["r3@1"]["n"] == 1
    assert row["r3@1"]["psnr"] == pytest.approx(23.0) and row["r3@1"]["nodiff_psnr"] == pytest.approx(24.0)
    assert row["old:webp"]["psnr"] == 25.0
    only = rc.summarize([tmp_path], only=("r3",))  # r3 alone: b.png counts where its curve brackets the rate
    assert only["images"]["0.2"] == ["a.png", "b.png"] and only["images"]["0.3"] == ["a.png"]
    assert only["decode"]["r3"]["cpu_s_per_mp"] == pytest.approx(2.0)
    assert rc._label("r3@0.25") == "release 3, t_scale 0.25" and rc._label("old:webp") == "WebP"


def test_models_measured_at_the_rate_keep_their_no_diffusion_figures(rc, tmp_path):
    """--at-rates: a model's record is at the target rate (its own rate control), like a
    conventional codec's, and its no-diffusion decode and decode time still reach the table."""
    recs = [{**_model_point("a.png", name, None, b * 1.01, p), "target_bpp": b}
            for name in ("r3", "r3.1") for b, p in ((0.1, 24), (0.2, 26), (0.3, 28))]
    recs = [dict(r, psnr=r["psnr"] + (0.5 if r["codec"] == "r3.1" else 0)) for r in recs]
    (tmp_path / "points.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = rc.summarize([tmp_path])
    row = res["rates"]["0.2"]
    assert row["r3"]["psnr"] == 26 and row["r3.1"]["psnr"] == 26.5 and row["r3"]["bpp"] == pytest.approx(0.202)
    assert row["r3.1"]["nodiff_psnr"] == 27 and res["decode"]["r3.1"]["cpu_s_per_mp"] == pytest.approx(2.0)
    assert rc._label("r3.1") == "release 3.1"


def _model_dir(path: Path, g_a: float, unet: float, t_scale: float = 0.25) -> Path:
    import torch
    from safetensors.torch import save_file

    path.mkdir()
    save_file({"vae.g_a.0.weight": torch.full((2,), g_a), "vae.g_s.0.weight": torch.full((2,), unet),
               "entropy.x": torch.ones(3), "channel_steps": torch.ones(4), "unet.w": torch.full((2,), unet)},
              str(path / "tiny.safetensors"))
    (path / "tiny.json").write_text(json.dumps({"vae": {"kind": "rd"}, "entropy": {"kind": "checkerboard"},
                                                "latent_stats": {"scaling_factor": 1.0, "ae_sha256": str(unet)},
                                                "codec": {"t_scale": t_scale}}))
    return path


def test_only_a_model_with_the_same_encoder_may_decode_another_models_files(rc, tmp_path):
    base = _model_dir(tmp_path / "base", 1.0, 1.0)
    assert rc.same_encoder(base, _model_dir(tmp_path / "decoder", 1.0, 2.0)) is True
    assert "encoder" in rc.same_encoder(base, _model_dir(tmp_path / "encoder", 3.0, 1.0))
    assert "t_scale" in rc.same_encoder(base, _model_dir(tmp_path / "rule", 1.0, 2.0, t_scale=1.0))


def test_relabel_names_the_other_weights_and_keeps_every_section(rc):
    from archiver.codecs.diffusion import container

    data = next((Path(__file__).parent / "data" / "dlc").glob("*.dlc")).read_bytes()
    h, sections = container.unpack(data)

    class Other:
        weights_digest = "ab" * 32

    h2, sections2 = container.unpack(rc.relabel(data, Other()))
    assert sections2 == sections and h2.weights_sha256 == "ab" * 32
    assert {k: v for k, v in vars(h2).items() if k != "weights_sha256"} == \
        {k: v for k, v in vars(h).items() if k != "weights_sha256"}


SHIPPED = Path(__file__).resolve().parents[1] / "archiver" / "weights"


@pytest.mark.skipif(not (SHIPPED / "tiny.safetensors").is_file(), reason="no shipped tiny weights")
def test_crop_sheet_shows_the_same_window_of_every_model_at_the_rate(rc, tmp_path):
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from archiver.bench.runner import texture_box

    yy, xx = np.mgrid[0:96, 0:128]
    a = np.stack([np.sin(xx / (4 + c)) * np.cos(yy / 5) * 90 + 128 for c in range(3)], -1).astype(np.uint8)
    src = tmp_path / "probe.png"
    Image.fromarray(a).save(src)
    out = tmp_path / "sheet.png"
    r = CliRunner().invoke(rc.cli, ["crops", str(src), str(out), "--model", f"r3={SHIPPED}", "--bpp", "0.5",
                                    "--codecs", "webp", "--size", "64"])
    assert r.exit_code == 0, r.output
    sheet = Image.open(out)
    # original, the model and WebP side by side: three 2x tiles of the 64-px window and two gaps
    assert sheet.size[0] == 3 * 128 + 2 * 4 and sheet.size[1] > 128
    tile = np.asarray(sheet.convert("RGB"))[:128, :128]
    x0, y0, x1, _ = texture_box(Image.fromarray(a), 64)
    assert x1 - x0 == 64 and np.array_equal(tile[::2, ::2], a[y0:y0 + 64, x0:x0 + 64])
