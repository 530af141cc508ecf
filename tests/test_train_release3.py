"""Weights release 3's training (stages rd, denoiser, realism) on tiny synthetic images: each
stage learns, resumes exactly, keeps the rd stage's held-out images out of training, and the
assembled model is a working, deterministic codec backbone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from archiver.app.main import main
from archiver.codecs.diffusion import container
from archiver_train import data as D
from archiver_train import pipeline
from archiver_train import rd as RD
from archiver_train.common import read_safetensors


@pytest.fixture(autouse=True)
def small_validation(monkeypatch):
    """Tiny images: validate on 2 held-out 64-px crops instead of 24 of 256 px."""
    monkeypatch.setattr(RD, "N_VAL", 2)
    monkeypatch.setattr(RD, "VAL_SIDE", 64)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:96, 0:112]
    for i in range(6):
        base = np.stack([np.sin(xx / (3 + i) + c) * np.cos(yy / (4 + c)) for c in range(3)], -1)
        a = (base * 70 + 128 + rng.normal(0, 10, base.shape)).clip(0, 255).astype(np.uint8)
        (d / ("sub" if i % 2 else "")).mkdir(exist_ok=True)
        Image.fromarray(a).save(d / ("sub" if i % 2 else "") / f"img{i}.png")
    return d


def run(images, out, stage, steps, **kw):
    return pipeline.run(images, out, stages=(stage,), steps=steps, batch=2, crop=64, seed=5, threads=1,
                        quiet=True, device="cpu", **kw)["stages"][0]


@pytest.fixture(scope="module")
def r3(images, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(RD, "N_VAL", 2)
    mp.setattr(RD, "VAL_SIDE", 64)
    import archiver_train.realism as R

    mp.setattr(R, "DISC_WARMUP", 1)  # the adversarial terms reach the generator from step 2
    out = tmp_path_factory.mktemp("r3")
    res = {st: run(images, out, st, 3) for st in ("rd", "denoiser")}
    before = read_safetensors(out / "ae_best.safetensors")[0]
    res["realism"] = run(images, out, "realism", 3, log_every=1)
    mp.undo()
    return out, res, before


def test_stages_run_and_export_the_release3_model(r3):
    out, res, _ = r3
    assert res["rd"]["step"] == 3 and res["rd"]["pixels"] == 3 * 2 * 64 * 64
    assert all(np.isfinite(r["loss"]) for r in res.values())
    cfg = json.loads((out / "tiny.json").read_text())
    assert cfg["vae"]["kind"] == "rd" and cfg["vae"]["latent_channels"] == 192
    assert cfg["unet"]["in_channels"] == 192 and cfg["entropy"]["latent_channels"] == 192
    assert cfg["codec"] == {"t_scale": 1.0, "eta": 1.0, "quant": "trained"}
    # the rd stage's trained grid, in scaled latent units, is the scaling factor in every channel
    w, meta = read_safetensors(out / "latent_stats.safetensors")
    assert torch.allclose(w["channel_steps"], torch.full((192,), meta["stats"]["scaling_factor"]))
    tensors, _ = read_safetensors(out / "tiny.safetensors")
    assert tensors["vae.g_s.0.weight"].dtype == torch.float16
    assert tensors["vae.g_a.1.gamma"].dtype == torch.float32  # GDN stays float32
    assert tensors["entropy.entropy_bottleneck.quantiles"].dtype == torch.float32


def test_rd_validation_logs_learning_curves_with_real_bits(r3):
    out, _, _ = r3
    evals = [json.loads(line) for line in (out / "train.log").read_text().splitlines()]
    evals = [e for e in evals if e.get("stage") == "rd" and e.get("event") == "eval"]
    assert evals and evals[-1]["pixels"] == 3 * 2 * 64 * 64
    for s in RD.VAL_S:
        assert evals[-1][f"val_bpp_s{s:g}"] > 0 and np.isfinite(evals[-1][f"val_psnr_s{s:g}"])
    # coarser quantization never costs more bits
    assert evals[-1]["val_bpp_s2"] <= evals[-1]["val_bpp_s0.5"]


def test_realism_trains_the_decoder_and_denoiser_only(r3):
    out, res, before = r3
    after = read_safetensors(out / "ae_realism_best.safetensors")[0]
    enc = [k for k in before if k.startswith("g_a.")]
    assert enc and all(torch.equal(before[k], after[k]) for k in enc)  # the encoder is frozen
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("g_s."))  # the decoder moved
    log = [json.loads(line) for line in (out / "train.log").read_text().splitlines()]
    steps = [e for e in log if e.get("stage") == "realism" and "loss" in e and "step" in e]
    assert any("adv" in e and "fm" in e and "d_loss" in e for e in steps)
    _, meta = read_safetensors(out / "unet_realism_best.safetensors")
    assert meta["eta"] == 1.0 and meta["t_scale"] == 1.0
    assert "val_spectral_diff_s1" in meta and "val_spectral_plain_s1" in meta


def test_assembled_model_codes_deterministically_with_seeded_noise(r3):
    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver.codecs.diffusion.pipeline import decode_bytes, encode_image
    from archiver.imageio import load_image

    out, _, _ = r3
    bb = load_tiny(device="cpu", weights_dir=out)
    assert bb.stride == 16 and bb.eta == 1.0 and bb.trained_grid
    img = load_image(next(out.parent.glob("imgs*")) / "img0.png")
    enc = encode_image(img, bb, quality=40, steps=4)
    header = container.read_header(enc.data)
    # format v2, quantization mode 1: the trained grid, nothing per channel in the file
    assert header.entropy_kind == 2 and header.version == 2 and header.qmode == container.QMODE_BACKBONE
    assert header.mu == [] and header.delta == []
    a = np.asarray(decode_bytes(enc.data, bb).image)
    b = np.asarray(decode_bytes(enc.data, bb).image)
    assert a.shape == (96, 112, 3) and np.array_equal(a, b)
    # mode 1 needs the backbone's steps; one without is refused in one line, not a crash
    from archiver.codecs.diffusion.pipeline import _quant_params
    from archiver.errors import ContainerError

    class NoSteps:
        def channel_steps(self):
            return None

    with pytest.raises(ContainerError, match="quantization steps are its backbone's"):
        _quant_params(header, NoSteps())
    assert torch.equal(_quant_params(header, bb).delta, bb.channel_steps().float())


def test_rd_resume_continues_exactly(images, tmp_path, monkeypatch, interrupt_on_call):
    """Stopped after 2 of 4 steps and resumed == never stopped (same crops, s, noise, schedule)."""
    straight = run(images, tmp_path / "a", "rd", 4)
    real = interrupt_on_call(RD, "rd_forward", 3)
    with pytest.raises(KeyboardInterrupt):
        run(images, tmp_path / "b", "rd", 4)
    assert torch.load(tmp_path / "b" / "rd.ckpt", weights_only=True)["step"] == 2
    monkeypatch.setattr(RD, "rd_forward", real)
    resumed = run(images, tmp_path / "b", "rd", 4, resume=True)
    assert resumed["step"] == straight["step"] == 4
    wa = torch.load(tmp_path / "a" / "rd.ckpt", weights_only=True)["vae"]
    wb = torch.load(tmp_path / "b" / "rd.ckpt", weights_only=True)["vae"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_rd_validation_loss_goes_down(images, tmp_path):
    """Real bits + lambda x distortion on the held-out crops, untrained vs 40 steps."""
    run(images, tmp_path, "rd", 40, eval_every=1000, lr=1e-3)
    evals = [json.loads(line) for line in (tmp_path / "train.log").read_text().splitlines()]
    evals = [e for e in evals if e.get("stage") == "rd" and e.get("event") == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 40
    assert evals[-1]["val_loss"] < 0.9 * evals[0]["val_loss"]


def test_holdout_is_stable_and_never_trained_on(images):
    a = D.load_set(images, min_side=64)
    b = D.load_set(images, min_side=32)
    ta, va = D.holdout(a, 2, 64)
    tb, vb = D.holdout(b, 2, 64)
    assert [a.names[i] for i in va] == [b.names[i] for i in vb] and len(va) == 2
    assert not set(ta) & set(va) and sorted(ta + va) == list(range(len(a.images)))


def test_image_bank_crops_are_seeded_and_in_range(images):
    from archiver_train.device import ImageBank

    bank = ImageBank(D.load_set(images, min_side=64).images, torch.device("cpu"))
    x1 = bank.crops(3, 48, np.random.default_rng(7))
    x2 = bank.crops(3, 48, np.random.default_rng(7))
    assert x1.shape == (3, 3, 48, 48) and torch.equal(x1, x2)
    assert x1.min() >= -1 and x1.max() <= 1


def test_plan_shares_the_minutes():
    m = pipeline.stage_minutes(pipeline.RECIPES["all"], 12)
    assert sum(m.values()) == pytest.approx(12) and m["rd"] > m["realism"] > m["denoiser"]
    assert pipeline.stage_minutes(("rd",), 12) == {"rd": 12}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cli_cuda_without_a_gpu_is_a_clear_error(images, tmp_path):
    r = CliRunner().invoke(main, ["train", str(images), "--out", str(tmp_path / "o"), "--stage", "rd",
                                  "--steps", "1", "--device", "cuda"])
    assert r.exit_code != 0 and "no CUDA GPU" in r.output and "Traceback" not in r.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_rd_stage_on_the_gpu(images, tmp_path):
    res = pipeline.run(images, tmp_path, stages=("rd",), steps=3, batch=2, crop=64, seed=5, quiet=True,
                       device="cuda", eval_every=3)["stages"][0]
    assert res["step"] == 3 and np.isfinite(res["loss"])


def test_unpack_gives_back_the_stage_files_of_an_assembled_model(r3, tmp_path):
    """A GPU run brings back the assembled model only: unpacked and assembled again, it is the
    same model, tensor for tensor (float16 storage survives the float32 round trip exactly)."""
    from archiver_train.export import assemble, unpack

    out, _, _ = r3
    written = unpack(out, tmp_path)
    assert {"ae_best.safetensors", "entropy_best.safetensors", "unet_best.safetensors",
            "latent_stats.safetensors"} <= set(written)
    assert unpack(out, tmp_path) == []  # files already there are kept
    assemble(tmp_path)
    a, _ = read_safetensors(out / "tiny.safetensors")
    b, _ = read_safetensors(tmp_path / "tiny.safetensors")
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    # and it decodes by the release's own rule (timestep scale, sampler noise): a stage that
    # tunes only the encoder (rd-tune) must not fall back to t_scale 1 and deterministic DDIM
    assert json.loads((tmp_path / "tiny.json").read_text())["codec"] == json.loads((out / "tiny.json").read_text())["codec"]
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(out / "tiny.safetensors", shipped)
    cfg = json.loads((out / "tiny.json").read_text())
    cfg["codec"] = {"t_scale": 0.25, "eta": 1.0, "quant": "trained"}
    (shipped / "tiny.json").write_text(json.dumps(cfg))
    unpack(shipped, tmp_path / "tuned")
    assemble(tmp_path / "tuned")
    assert json.loads((tmp_path / "tuned" / "tiny.json").read_text())["codec"] == cfg["codec"]


def test_unpack_refuses_a_folder_without_a_model(tmp_path):
    from archiver.errors import UsageError
    from archiver_train.export import unpack

    with pytest.raises(UsageError, match="no assembled model"):
        unpack(tmp_path, tmp_path / "out")


@pytest.fixture(scope="module")
def fidelity(r3, images, tmp_path_factory):
    """Stage fidelity started from the assembled release-3 model of ``r3`` (as from archiver/weights)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(RD, "N_VAL", 2)
    mp.setattr(RD, "VAL_SIDE", 64)
    import archiver_train.fidelity as F

    mp.setattr(F, "DISC_WARMUP", 1)  # the adversarial terms reach the generator from step 2
    init, _, _ = r3
    out = tmp_path_factory.mktemp("fidelity")
    res = run(images, out, "fidelity", 3, log_every=1, init=init)
    mp.undo()
    return init, out, res


def test_fidelity_moves_only_the_decoder_and_denoiser(fidelity):
    import archiver_train.fidelity as F

    init, out, res = fidelity
    assert res["step"] == 3 and np.isfinite(res["loss"])
    a, _ = read_safetensors(init / "tiny.safetensors")
    b, _ = read_safetensors(out / "tiny.safetensors")
    assert a.keys() == b.keys()
    frozen = [k for k in a if k.startswith(("vae.g_a.", "entropy.")) or k == "channel_steps"]
    assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)  # the encoder side: bytes unchanged
    # training moved the decoder and the denoiser (the export is the best held-out score's EMA,
    # which after 3 tiny steps may still be the starting point)
    from archiver_train.common import load_checkpoint

    trained = load_checkpoint(out / "fidelity.ckpt")["model"]
    assert any(not torch.equal(a[k].float(), trained[k]) for k in a if k.startswith("vae.g_s."))
    assert any(not torch.equal(a[k].float(), trained[k]) for k in a if k.startswith("unet."))
    assert all(torch.equal(a[k].float(), trained[k]) for k in a if k.startswith("vae.g_a."))
    exported, _ = read_safetensors(out / "ae_fidelity_best.safetensors")
    assert all(torch.equal(b[f"vae.{k}"], v.half()) for k, v in exported.items() if k.startswith("g_s.0."))
    cfg = json.loads((out / "tiny.json").read_text())
    assert cfg["codec"] == {"t_scale": F.T_SCALE, "eta": 1.0, "quant": "trained"}
    assert cfg["training"]["fidelity"]["alpha"] == F.ALPHA
    log = [json.loads(line) for line in (out / "train.log").read_text().splitlines()]
    assert any(e.get("event") == "init" and "ae_best.safetensors" in e["written"] for e in log)
    steps = [e for e in log if e.get("stage") == "fidelity" and "loss" in e and "lr" in e]
    assert len(steps) == 3 and all("ms_ssim_diff" in e and "ms_ssim_plain" in e for e in steps)
    # the realism stage's texture terms: the discriminator trains every step, and after its
    # warm-up the decoder hears from it (adversarial and feature matching)
    assert all("d_loss" in e for e in steps)
    assert "adv" not in steps[0] and all("adv" in e and "fm" in e for e in steps[1:])
    assert "disc" in load_checkpoint(out / "fidelity.ckpt")
    assert cfg["training"]["fidelity"]["w_adv"] == F.W_ADV > 0
    evals = [e for e in log if e.get("stage") == "fidelity" and e.get("event") == "eval"]
    assert evals[0]["baseline"] == "the model it starts from"
    assert all(f"val_ms_ssim_diff_s{s:g}" in evals[-1] for s in F.VAL_S)


def test_fidelity_model_writes_the_same_bytes_and_decodes_its_own_way(fidelity):
    """Same encoder, same entropy model: an image coded by the fine-tuned model has the starting
    model's sections; only the weights digest in the header differs, and each model decodes it
    differently (so a file must name the model that decodes it)."""
    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver.codecs.diffusion.pipeline import decode_bytes, encode_image
    from archiver.imageio import load_image

    init, out, _ = fidelity
    old, new = load_tiny(device="cpu", weights_dir=init), load_tiny(device="cpu", weights_dir=out)
    assert new.t_scale != old.t_scale
    img = load_image(next(init.parent.glob("imgs*")) / "img0.png")
    a, b = encode_image(img, old, quality=40, steps=4), encode_image(img, new, quality=40, steps=4)
    (ha, sa), (hb, sb) = container.unpack(a.data), container.unpack(b.data)
    assert sa == sb and ha.weights_sha256 != hb.weights_sha256
    assert {k: v for k, v in vars(ha).items() if k not in ("weights_sha256", "t")} == \
        {k: v for k, v in vars(hb).items() if k not in ("weights_sha256", "t")}
    x, y = np.asarray(decode_bytes(b.data, new).image), np.asarray(decode_bytes(b.data, new).image)
    assert np.array_equal(x, y)  # deterministic
    assert not np.array_equal(x, np.asarray(decode_bytes(a.data, old).image))


def test_fidelity_distortion_is_zero_at_the_original_and_grows_with_error():
    import archiver_train.fidelity as F

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    small = x + 0.02 * torch.randn(x.shape, generator=g)
    big = x + 0.2 * torch.randn(x.shape, generator=g)
    d0, d1, d2 = (float(F.distortion(y, x, 1.0)[0]) for y in (x, small, big))
    assert d0 < 1e-5 < d1 < d2
    # one quality factor's weight: lambda(s) = LAMBDA / s^2, as the rd stage's
    assert float(F.distortion(big, x, 2.0)[0]) == pytest.approx(d2 / 4, rel=1e-5)


def test_cli_fidelity_from_a_folder_without_a_model_is_one_clear_line(images, tmp_path):
    r = CliRunner().invoke(main, ["train", str(images), "--stage", "fidelity", "--init", str(tmp_path),
                                  "--out", str(tmp_path / "out"), "--steps", "1"])
    assert r.exit_code != 0 and "no assembled model" in r.output and "Traceback" not in r.output


def test_rd_tune_fine_tunes_the_shipped_encoder_for_ms_ssim(r3, images, tmp_path):
    """Stage rd-tune starts from the assembled model's autoencoder and entropy model (not from
    scratch), trains them on rate + a distortion mixed with MS-SSIM, and validates MS-SSIM too."""
    import archiver_train.fidelity as F
    from archiver_train.common import load_checkpoint

    init, _, _ = r3
    res = run(images, tmp_path, "rd-tune", 2, init=init, log_every=1)
    assert res["stage"] == "rd-tune" and res["step"] == 2 and np.isfinite(res["loss"])
    log = [json.loads(line) for line in (tmp_path / "train.log").read_text().splitlines()]
    evals = [e for e in log if e.get("stage") == "rd-tune" and e.get("event") == "eval"]
    start = evals[0]
    # step 0 is the shipped model, not an untrained one (whose PSNR is about 12 dB)
    a, _ = read_safetensors(init / "tiny.safetensors")
    assert all(f"val_ms_ssim_s{s:g}" in start for s in RD.VAL_S)
    trained = load_checkpoint(tmp_path / "rd-tune.ckpt")["vae"]
    assert any(not torch.equal(a[f"vae.{k}"].float(), v) for k, v in trained.items() if k.startswith("g_a."))
    # the decoder trains too (RD.TUNE_TRAINS_DECODER) ...
    assert RD.TUNE_TRAINS_DECODER
    assert any(not torch.equal(a[f"vae.{k}"].float(), v) for k, v in trained.items() if k.startswith("g_s."))
    _, meta = read_safetensors(tmp_path / "ae_best.safetensors")
    assert meta["msssim_alpha"] == F.ALPHA and meta["log2_s_range"] == list(F.LOG2_S_RANGE)
    assert meta["train_decoder"] is True
    # ... unless asked to keep it: then only the encoder and the entropy model move
    frozen = tmp_path / "frozen"
    run(images, frozen, "rd-tune", 2, init=init, train_decoder=False)
    trained = load_checkpoint(frozen / "rd-tune.ckpt")["vae"]
    assert all(torch.equal(a[f"vae.{k}"].float(), v) for k, v in trained.items() if k.startswith("g_s."))
    assert any(not torch.equal(a[f"vae.{k}"].float(), v) for k, v in trained.items() if k.startswith("g_a."))
    assert read_safetensors(frozen / "ae_best.safetensors")[1]["train_decoder"] is False
    assert "tuned_from_ae_sha256" in meta


def test_rd_distortion_is_mse_without_alpha_and_mixes_ms_ssim_with_it():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    mse = 255.0**2 / 4 * (y - x).pow(2).mean(dim=(1, 2, 3))
    def distortion(a, b, alpha):
        return RD.mix(*RD.distortion_terms(a, b, bool(alpha)), alpha)

    assert torch.allclose(distortion(y, x, 0.0), mse)
    mixed = distortion(y, x, 0.5)
    assert mixed.shape == (2,) and torch.all(mixed > 0.5 * mse)
    assert torch.allclose(distortion(x, x, 0.5), torch.zeros(2), atol=1e-2)
