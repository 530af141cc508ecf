"""Training of the tiny backbone on tiny synthetic images: every stage runs, gives finite
losses and loadable weights, resumes exactly where it stopped, and the assembled model loads
as a working codec backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from archiver.app.main import main
from archiver_train import pipeline
from archiver_train.common import read_safetensors


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:88, 0:88]
    for i in range(4):
        base = np.stack([np.sin(xx / (3 + i) + c) * np.cos(yy / (5 + c)) for c in range(3)], -1)
        a = (base * 80 + 128 + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(a).save(d / f"img{i}.png")
    (d / "notes.txt").write_text("not an image, ignored")
    return d


def run(images, out, stage, steps, **kw):
    crop = {"ae": 72, "denoiser": 64, "entropy": 64, "codec": 64}[stage]
    return pipeline.run(images, out, stages=(stage,), steps=steps, batch=2, crop=crop, seed=3, threads=1,
                        quiet=True, **kw)["stages"][0]


@pytest.fixture(scope="module")
def trained(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = {st: run(images, out, st, 3) for st in ("ae", "denoiser", "entropy")}
    return out, res


def test_all_stages_finite_and_exported(trained):
    out, res = trained
    assert all(np.isfinite(r["loss"]) for r in res.values())
    assert res["ae"]["step"] == 3 and np.isfinite(res["ae"]["val_psnr"])
    assert 0 < res["entropy"]["val_bpp"] < 50
    for name in ("ae.ckpt", "denoiser.ckpt", "entropy.ckpt", "ae_best.safetensors", "unet_best.safetensors",
                 "entropy_best.safetensors", "latent_stats.safetensors", "tiny.safetensors", "tiny.json", "train.log"):
        assert (out / name).is_file(), name
    # checkpoints are plain tensors/dicts: loadable without unpickling arbitrary objects
    ck = torch.load(out / "ae.ckpt", weights_only=True)
    assert ck["step"] == 3


def test_metadata_records_config_and_data(trained, images):
    out, res = trained
    _, meta = read_safetensors(out / "tiny.safetensors")
    cfg = meta["config"]
    data = cfg["training"]["ae"]["data"]
    assert data["files"] == 4 and data["used"] == 4 and len(data["file_list_sha256"]) == 64
    assert cfg["vae"]["latent_channels"] == 8 and cfg["unet"]["in_channels"] == 8
    assert cfg["vae"]["scaling_factor"] == pytest.approx(cfg["latent_stats"]["scaling_factor"])
    assert cfg["entropy"] == {"kind": "checkerboard", "latent_channels": 8, "hyper_channels": 32}
    assert json.loads((out / "tiny.json").read_text()) == cfg


def test_resume_continues_exactly(images, tmp_path, monkeypatch, interrupt_on_call):
    """A run stopped after 2 of 4 steps and resumed ends with the same weights as one that was
    never stopped (same data, noise and learning-rate schedule)."""
    import archiver_train.ae as ae

    straight = run(images, tmp_path / "a", "ae", 4)
    real = interrupt_on_call(ae, "ae_loss", 3)
    with pytest.raises(KeyboardInterrupt):
        run(images, tmp_path / "b", "ae", 4)
    assert torch.load(tmp_path / "b" / "ae.ckpt", weights_only=True)["step"] == 2
    monkeypatch.setattr(ae, "ae_loss", real)
    resumed = run(images, tmp_path / "b", "ae", 4, resume=True)
    assert resumed["step"] == 4
    assert '"event": "resumed"' in (tmp_path / "b" / "train.log").read_text()
    wa = torch.load(tmp_path / "a" / "ae.ckpt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "ae.ckpt", weights_only=True)["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert straight["loss"] == pytest.approx(resumed["loss"], rel=1e-4)


def test_ae_loss_goes_down(images, tmp_path):
    from archiver_train import data as D
    from archiver_train.ae import ae_loss
    from archiver.codecs.diffusion.backbones.tiny import build_vae

    torch.manual_seed(0)
    vae = build_vae()
    x = D.random_crops(D.load_set(images, min_side=72).images, 4, 72, np.random.default_rng(0))
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss, _ = ae_loss(vae, x, sample=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_assembled_model_is_a_working_backbone(trained):
    from archiver.codecs.diffusion.backbones.tiny import load_tiny, weights_digest
    from archiver.codecs.diffusion.pipeline import decode_bytes, encode_image
    from archiver.imageio import load_image

    out, _ = trained
    b = load_tiny(device="cpu", weights_dir=out)
    assert b.id == "tiny" and b.stride == 8 and b.latent_channels == 8
    assert b.weights_digest == weights_digest(out)
    assert b.channel_steps().shape == (8,) and b.entropy_model() is not None
    img = load_image(_img(out))
    enc = encode_image(img, b, quality=50, steps=2)
    dec = decode_bytes(enc.data, b)
    assert dec.image.size == (img.width, img.height)


def _img(out):
    p = out / "probe.png"
    Image.fromarray((np.random.default_rng(1).random((40, 56, 3)) * 255).astype(np.uint8)).save(p)
    return p


def test_cli_json_and_user_errors(images, tmp_path):
    r = CliRunner().invoke(main, ["train", str(images), "--out", str(tmp_path / "o"), "--stage", "ae", "--steps", "1",
                                  "--crop", "72", "--batch", "1", "--threads", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["stages"][0]["step"] == 1
    r = CliRunner().invoke(main, ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "not found" in r.output
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    Image.new("RGB", (96, 96)).save(kodak / "kodim01.png")
    r = CliRunner().invoke(main, ["train", str(kodak), "--out", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "Kodak" in r.output


def test_calibration_sets_t_scale(trained, tmp_path):
    """The timestep calibration picks one of the tried scales and travels with the model."""
    import shutil

    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver.imageio import load_image
    from archiver_train.calibrate import calibrate
    from archiver_train.export import assemble

    out, _ = trained
    d = tmp_path / "m"
    shutil.copytree(out, d)
    b = load_tiny(device="cpu", weights_dir=d)
    res = calibrate(b, [load_image(_img(d))], scales=(0.5, 1.0), bpps=(1.0,), steps=1)
    assert res["t_scale"] in (0.5, 1.0) and set(res["by_scale"]) == {"0.5", "1.0"}
    (d / "calibration.json").write_text(json.dumps(dict(res, t_scale=0.5)))
    assemble(d)
    assert load_tiny(device="cpu", weights_dir=d).t_scale == 0.5


# -- stage "codec": the denoiser and decoder fine-tuned on the decode path ---------------------

@pytest.fixture(scope="module")
def tuned(images, trained, tmp_path_factory):
    import shutil

    out = tmp_path_factory.mktemp("tuned") / "m"
    shutil.copytree(trained[0], out)
    return out, run(images, out, "codec", 3)


def test_codec_stage_ships_its_denoiser_decoder_and_timestep_rule(tuned):
    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver_train import codec_tune

    out, res = tuned
    assert res["stage"] == "codec" and res["step"] == 3 and np.isfinite(res["loss"])
    log = [json.loads(line) for line in (out / "train.log").read_text().splitlines()]
    baselines = [r["baseline"] for r in log if r.get("stage") == "codec" and r.get("step") == 0 and "baseline" in r]
    assert baselines == ["no diffusion", "stage-2 denoiser"]
    cfg = json.loads((out / "tiny.json").read_text())
    assert cfg["codec"]["t_scale"] == codec_tune.T_SCALE
    assert cfg["training"]["codec"]["entropy_model"] == "CheckerboardEntropyModel"
    assert "denoiser" in cfg["training"]  # stage 2's record stays
    shipped, _ = read_safetensors(out / "tiny.safetensors")
    unet, _ = read_safetensors(out / "unet_codec_best.safetensors")
    vae, _ = read_safetensors(out / "ae_codec_best.safetensors")
    ae, _ = read_safetensors(out / "ae_best.safetensors")
    assert all(torch.equal(shipped[f"unet.{k}"], v.half()) for k, v in unet.items())
    assert all(torch.equal(shipped[f"vae.{k}"], v.half()) for k, v in vae.items())
    # only the decoder moved: the encoder (and so every latent, step and rate) is stage 1's
    assert all(torch.equal(vae[k], ae[k]) for k in ae if k.startswith(("analysis", "enc_ctx", "logvar")))
    assert any(not torch.equal(vae[k], ae[k]) for k in ae if k.startswith(("synthesis", "dec_ctx", "refine")))
    assert load_tiny(device="cpu", weights_dir=out).t_scale == codec_tune.T_SCALE


def test_codec_stage_trains_the_path_the_decoder_runs(tuned):
    """The training path (float32, differentiable) reproduces the real decoder's pixels from the
    same bitstream, so what the stage optimises is what users get."""
    from archiver.codecs.diffusion import container
    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver.codecs.diffusion.pipeline import decode_bytes, encode_image
    from archiver.codecs.diffusion.quantize import QuantParams, from_units, noise_variance
    from archiver.codecs.diffusion.tensors import to_image
    from archiver.imageio import load_image
    from archiver_train.codec_tune import CodecPath, Decoding

    out, _ = tuned
    b = load_tiny(device="cpu", weights_dir=out)
    yy, xx = np.mgrid[0:64, 0:96]
    a = np.stack([np.sin(xx / 5 + c) * np.cos(yy / 7) * 90 + 128 for c in range(3)], -1).astype(np.uint8)
    Image.fromarray(a).save(out / "probe64.png")  # latent 8x12: no padding for the UNet's strides
    img = load_image(out / "probe64.png")
    enc = encode_image(img, b, quality=30, steps=4)
    real = np.asarray(decode_bytes(enc.data, b).image, dtype=np.int16)
    header, sections = container.unpack(enc.data)
    shape = (1, header.latent_channels, header.latent_height, header.latent_width)
    p = QuantParams(mu=torch.tensor(header.mu), delta=torch.tensor(header.delta), s=header.s)
    y_hat = from_units(b.entropy_model().decode(sections[container.LATENT], shape), p)
    path = CodecPath(b.scheduler.alphas_cumprod, "epsilon", b.scaling_factor, header.steps, b.t_scale)
    assert path.timestep(noise_variance(p, shape)) == header.t
    with torch.no_grad():
        x = path(Decoding(b.unet, b.vae), y_hat, noise_variance(p, shape))
    mine = np.asarray(to_image(x, img.width, img.height), dtype=np.int16)
    assert np.abs(mine - real).max() <= 2


def test_codec_stage_resumes(images, tuned, tmp_path):
    import shutil

    out, _ = tuned
    d = tmp_path / "m"
    shutil.copytree(out, d)
    res = run(images, d, "codec", 5, resume=True)
    assert res["step"] == 5 and '"event": "resumed"' in (d / "train.log").read_text()


def test_codec_stage_can_grow_a_deblocking_head(images, trained, tmp_path, monkeypatch):
    """With DEBLOCK set, the decoder gains a zero-initialised full-resolution head: the same
    pixels before training, its own weights and config in the shipped model after."""
    import shutil

    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver_train import codec_tune
    from archiver_train.latents import load_ae

    d = tmp_path / "m"
    shutil.copytree(trained[0], d)
    monkeypatch.setattr(codec_tune, "DEBLOCK", {"deblock_channels": 8, "deblock_blocks": 1})
    vae, _ = load_ae(d)
    grown = codec_tune.with_deblock(vae)
    z = torch.randn(1, 8, 4, 6)
    assert grown.deblock is not None and torch.equal(grown.decode(z).sample, vae.decode(z).sample)
    run(images, d, "codec", 2)
    cfg = json.loads((d / "tiny.json").read_text())
    assert cfg["vae"]["deblock_channels"] == 8 and cfg["vae"]["deblock_blocks"] == 1
    b = load_tiny(device="cpu", weights_dir=d)
    assert b.vae.deblock is not None
    assert b.decode(torch.randn(1, 8, 4, 6)).shape == (1, 3, 32, 48)
