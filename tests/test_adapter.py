"""Adapters for diffusers models (``archiver train adapter``): trained on a tiny SD-layout model
with the backbone frozen, used by the codec, named in every file and enforced on decode.

The model is the tests' TAESD-layout one (``vae_kind="tiny"``): its random encoder gives
spatially correlated latents (neighbour correlation ~0.8, like a trained VAE's thumbnail-like
latent), where the random AutoencoderKL's are nearly white (~0.1) and leave an entropy model
nothing to learn from neighbours. Quality is compared in the latent (the decoders are random).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from archiver.app.main import main
from archiver.codecs.diffusion import pipeline
from archiver.codecs.diffusion.adapter import (adapter_digest, attach, backbone_for_header, get_adapted_backbone, keep_previous,
                                    load_adapter)
from archiver.codecs.diffusion.backbones import get_backbone
from archiver.codecs.diffusion.backbones.diffusers_backbone import DiffusersBackbone
from archiver.codecs.diffusion.container import read_header
from archiver.codecs.diffusion.entropy import generic_entropy_model
from archiver.codecs.diffusion.quantize import QuantParams, to_units
from archiver.codecs.diffusion.tensors import to_tensor
from archiver.testing.codec import build_tiny_sd, pink_noise_images, tiny_sd_dir
from archiver.errors import AdapterError, UsageError
from archiver.imageio import load_image
from archiver_train.adapter import train_adapter

ROOT = Path(__file__).resolve().parents[1]
STEPS = 60  # "a few dozen": seconds on two CPU cores


def model_dir() -> Path:
    return tiny_sd_dir(conditional=False, vae_kind="tiny")


def train(data, out, **kw):
    args = dict(model=str(model_dir()), out=out, steps=STEPS, batch=16, crop=128, lr=1e-2, eval_every=20,
                n_val=4, seed=0, threads=1, quiet=True, device="cpu")
    args.update(kw)
    return train_adapter(data, **args)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return pink_noise_images(tmp_path_factory.mktemp("train"), 16, size=128, seed=0)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Images never seen in training (another seed), larger than the training crops."""
    d = pink_noise_images(tmp_path_factory.mktemp("held"), 3, size=256, seed=99)
    return sorted(d.glob("*.png"))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapters") / "sd.adapter"
    return out, train(data, out)


@pytest.fixture(scope="module")
def bare():
    return get_backbone("diffusers", model_path=str(model_dir()), device="cpu")


@pytest.fixture(scope="module")
def adapted(trained):
    return get_adapted_backbone("diffusers", model_path=str(model_dir()), device="cpu", adapter=str(trained[0]))


def test_training_writes_an_adapter_beside_the_model_and_records_its_saving(trained, bare):
    out, res = trained
    assert res["step"] == STEPS and np.isfinite(res["loss"])
    assert {p.name for p in out.iterdir()} >= {"adapter.json", "adapter.safetensors", "training"}
    cfg = json.loads((out / "adapter.json").read_text())
    assert cfg["format"] == "archiver-adapter" and cfg["backbone"]["weights_sha256"] == bare.weights_digest
    assert cfg["entropy"]["kind"] == "checkerboard" and cfg["training"]["data"]["used"] == 16
    # validation with the real rANS coder, beside the generic model at the same steps
    assert res["val_ratio"] < 1 and res["saving"] == pytest.approx(1 - res["val_ratio"])
    assert res["validation"]["val_bpp"] < res["generic"]["val_bpp"]
    assert res["sha256"] == adapter_digest(out)
    steps = torch.tensor(cfg["quantization"]["channel_steps"])
    assert steps.shape == (4,) and bool((steps > 0).all())
    # mean(delta^2) is the latent's variance: quality 50 is about one step per standard deviation
    assert float(steps.pow(2).mean().sqrt()) == pytest.approx(cfg["quantization"]["latent_rms"], rel=1e-4)


def another_adapter(adapter: Path, out: Path) -> Path:
    """A valid adapter for the same model with another digest (a copy with one changed note)."""
    shutil.copytree(adapter, out, ignore=shutil.ignore_patterns("training", "previous"))
    cfg = json.loads((out / "adapter.json").read_text())
    cfg["training"]["note"] = "another adapter"
    (out / "adapter.json").write_text(json.dumps(cfg))
    return out


def _same_latents(adapter, backbone, paths, log2_s=(-2.0, 0.0, 2.0)):
    """Bytes and squared quantization error in step units of both entropy models on the same
    latents with the same steps (so the same quality)."""
    ours, generic = generic_entropy_model(), None
    res = {"adapter": [0, 0.0], "generic": [0, 0.0]}
    for p in paths:
        img = load_image(p)
        y = backbone.encode(to_tensor(img.rgb)).float()
        for ls in log2_s:
            q = QuantParams(mu=y.mean(dim=(0, 2, 3)), delta=adapter.channel_steps, s=2.0**ls)
            u = to_units(y, q)
            for name, model in (("adapter", adapter.entropy), ("generic", ours)):
                data, u_hat = model.encode(u)
                assert torch.equal(model.decode(data, tuple(u.shape)).float(), u_hat.float())
                res[name][0] += len(data)
                res[name][1] += float((u_hat - u).pow(2).mean())
    return res


def test_adapter_codes_the_same_latents_in_fewer_bytes_at_equal_quality(adapted, bare, held_out):
    """Held-out images, three rates (about 0.25, 0.1 and 0.03 bpp): the same steps, fewer bytes on
    average per rate, and no rate much worse."""
    ratios = []
    for ls in (-2.0, 0.0, 2.0):
        r = _same_latents(adapted.adapter, bare, held_out, (ls,))
        (a_bytes, a_err), (g_bytes, g_err) = r["adapter"], r["generic"]
        # same steps; rounding around predicted means can only be closer (it is, at low rates)
        assert a_err <= 1.05 * g_err, "the adapter's quality is at least the generic model's"
        ratios.append(a_bytes / g_bytes)
    assert np.mean(ratios) < 0.9 and max(ratios) < 1.05, ratios


def test_codec_files_with_the_adapter_are_smaller_at_equal_quality(adapted, bare, held_out):
    """Through the real encoder: the same steps without the adapter's entropy model (the generic
    one) need more bytes for the same quality, and the file names the adapter."""
    generic = DiffusersBackbone.from_components(bare.vae, bare.unet, bare.scheduler, backbone_id=bare.id,
                                                weights_digest=bare.weights_digest,
                                                channel_steps=adapted.channel_steps(), device="cpu")
    img = load_image(held_out[0])
    ours = [pipeline.encode_image(img, adapted, quality=q, steps=1) for q in (45, 55, 65)]
    theirs = [pipeline.encode_image(img, generic, quality=q, steps=1) for q in (45, 55, 65)]
    assert all(r.entropy_model == "trained" for r in ours)
    assert sum(r.size_bytes for r in ours) < 0.95 * sum(r.size_bytes for r in theirs)
    assert [r.t for r in ours] == [r.t for r in theirs], "same steps: same noise level, same timestep"
    h = read_header(ours[0].data)
    assert h.version == 2 and h.adapter_sha256 == adapted.adapter_digest and h.entropy_kind == 2
    assert read_header(theirs[0].data).version == 1 and read_header(theirs[0].data).adapter_sha256 is None
    d = pipeline.decode_bytes(ours[1].data, adapted)
    assert d.image.size == img.rgb.size


def test_decoding_refuses_a_missing_or_different_adapter(adapted, bare, held_out, trained, tmp_path):
    img = load_image(held_out[1])
    r = pipeline.encode_image(img, adapted, quality=50, steps=0)
    with pytest.raises(AdapterError, match="no adapter is loaded") as e:
        pipeline.decode_bytes(r.data, bare)
    assert e.value.exit_code == 10
    other = attach(bare, load_adapter(another_adapter(trained[0], tmp_path / "other.adapter")))
    with pytest.raises(AdapterError, match="is .*; decode with --adapter"):
        pipeline.decode_bytes(r.data, other)
    # a file made without an adapter decodes with the bare backbone even when one is attached
    plain = pipeline.encode_image(img, bare, quality=50, steps=0)
    assert backbone_for_header(None, adapted) is bare
    a = np.asarray(pipeline.decode_bytes(plain.data, adapted).image)
    assert np.array_equal(a, np.asarray(pipeline.decode_bytes(plain.data, bare).image))


def test_a_replaced_adapter_is_kept_and_still_decodes_its_files(adapted, bare, held_out, trained, tmp_path):
    out = tmp_path / "sd.adapter"
    shutil.copytree(trained[0], out, ignore=shutil.ignore_patterns("training", "previous"))
    first = attach(bare, load_adapter(out))
    r = pipeline.encode_image(load_image(held_out[2]), first, quality=50, steps=0)
    kept = keep_previous(out)
    assert kept == out / "previous" / first.adapter_digest[:16]
    cfg = json.loads((out / "adapter.json").read_text())
    cfg["training"]["step"] += 1  # the retrained adapter: a different digest
    (out / "adapter.json").write_text(json.dumps(cfg))
    second = attach(bare, load_adapter(out))
    assert second.adapter_digest != first.adapter_digest
    d = pipeline.decode_bytes(r.data, second)  # found in previous/ by digest
    assert d.image.size == (256, 256)


def test_adapter_for_other_weights_and_damaged_adapters_are_refused(trained, tmp_path):
    other = DiffusersBackbone.from_pretrained(build_tiny_sd(tmp_path / "m", conditional=False, vae_kind="tiny", seed=5),
                                              device="cpu")
    with pytest.raises(AdapterError, match="trained for backbone weights"):
        attach(other, load_adapter(trained[0]))
    with pytest.raises(AdapterError, match="not found"):
        load_adapter(tmp_path / "nope")
    bad = tmp_path / "bad"
    shutil.copytree(trained[0], bad, ignore=shutil.ignore_patterns("training", "previous"))
    (bad / "adapter.json").write_text("{not json")
    with pytest.raises(AdapterError, match="unreadable adapter.json"):
        load_adapter(bad)
    (bad / "adapter.json").write_text(json.dumps({"format": "archiver-adapter", "version": 99}))
    with pytest.raises(AdapterError, match="newer"):
        load_adapter(bad)
    shutil.copy(trained[0] / "adapter.json", bad / "adapter.json")
    (bad / "adapter.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(AdapterError, match="unreadable adapter.safetensors"):
        load_adapter(bad)


def test_resume_continues_exactly(data, tmp_path, monkeypatch):
    """Stopped after 2 of 4 steps and resumed, the run ends where an uninterrupted one does."""
    import archiver_train.adapter as A

    straight = train(data, tmp_path / "a.adapter", steps=4, eval_every=100)
    real, calls = A.to_u, []

    def stop_at_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(A, "to_u", stop_at_third)  # called once per training step
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "b.adapter", steps=4, eval_every=100)
    assert torch.load(tmp_path / "b.adapter" / "training" / "adapter.ckpt", weights_only=True)["step"] == 2
    monkeypatch.setattr(A, "to_u", real)
    resumed = train(data, tmp_path / "b.adapter", steps=4, eval_every=100, resume=True)
    assert resumed["step"] == 4 and '"event": "resumed"' in (tmp_path / "b.adapter" / "training" / "train.log").read_text()
    wa = torch.load(tmp_path / "a.adapter" / "training" / "adapter.ckpt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b.adapter" / "training" / "adapter.ckpt", weights_only=True)["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)
    assert straight["loss"] == pytest.approx(resumed["loss"], rel=1e-5)


def test_half_precision_backbone_as_on_cuda(data, tmp_path, bare):
    """On CUDA the frozen backbone runs in fp16 (the codec's policy); the cached latents and the
    entropy model stay fp32 on the training device. Same code path on CPU with an fp16 backbone."""
    half = DiffusersBackbone(copy.deepcopy(bare.vae), copy.deepcopy(bare.unet), bare.scheduler, backbone_id=bare.id,
                             weights_digest=bare.weights_digest, device="cpu", dtype=torch.float16)
    assert half.vae.dtype == torch.float16
    res = train(data, tmp_path / "h.adapter", steps=3, eval_every=3, backbone=half, max_files=4, n_val=1,
                crop=64, max_side=64)  # half precision is slow on a CPU
    assert np.isfinite(res["loss"]) and res["step"] == 3
    lats = torch.load(tmp_path / "h.adapter" / "training" / "latents.pt", weights_only=True)["latents"]
    assert all(z.dtype == torch.float32 and z.device.type == "cpu" for z in lats)
    ad = load_adapter(tmp_path / "h.adapter")
    assert all(v.dtype != torch.float16 for v in ad.entropy.state_dict().values())


def test_device_and_output_folder_errors(data, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA"):
            train(data, tmp_path / "x.adapter", device="cuda")
        r = run_cli("encode", next(data.glob("*.png")), tmp_path / "x.dlc", "--model", model_dir(), "--device", "cuda")
        assert r.exit_code == 2 and "no CUDA device" in r.output
    with pytest.raises(UsageError, match="beside the model folder, not inside it"):
        train(data, model_dir() / "adapter", steps=1)
    with pytest.raises(UsageError, match="unknown device"):
        train(data, tmp_path / "y.adapter", device="gpu0")


def run_cli(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def test_cli_trains_encodes_and_enforces(data, held_out, tmp_path):
    model = tmp_path / "sd-tiny"
    shutil.copytree(model_dir(), model)
    r = run_cli("train", "adapter", "--backbone", "diffusers", "--model", model, "--device", "cpu", data,
                "--steps", 4, "--batch", 4, "--crop", 64, "--eval-every", 2, "--threads", 1, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    adapter = tmp_path / "sd-tiny.adapter"  # default: beside the model
    assert res["adapter"] == str(adapter) and (adapter / "adapter.safetensors").is_file()
    assert not any(p.name.endswith(".adapter") for p in model.rglob("*")), "nothing written inside the model"
    human = run_cli("train", "adapter", "--model", model, "--device", "cpu", data, "--steps", 5, "--batch", 4,
                    "--crop", 64, "--eval-every", 5, "--threads", 1, "--resume")
    assert human.exit_code == 0, human.output
    assert "adapter written to" in human.output and "saving=" in human.output
    assert (adapter / "previous").is_dir(), "the adapter the run replaced is kept"

    src, dlc, png = held_out[0], tmp_path / "a.dlc", tmp_path / "a.png"
    r = run_cli("encode", src, dlc, "--model", model, "--adapter", adapter, "--quality", 50, "--json")
    assert r.exit_code == 0, r.output
    enc = json.loads(r.output)
    assert enc["adapter_sha256"] == adapter_digest(adapter) and enc["entropy_model"] == "trained"
    r = run_cli("decode", dlc, png, "--model", model, "--json")
    assert r.exit_code == 10 and "no adapter is loaded" in r.output
    r = run_cli("decode", dlc, png, "--model", model, "--adapter", adapter, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["adapter_sha256"] == enc["adapter_sha256"]

    cfg = tmp_path / "archiver.yaml"
    cfg.write_text(f"backbone: diffusers\ndiffusers_model: {model}\nadapter: {adapter}\ndevice: cpu\n")
    r = run_cli("decode", dlc, tmp_path / "b.png", env={"ARCHIVER_CONFIG": str(cfg)})
    assert r.exit_code == 0, r.output
    r = run_cli("encode", src, tmp_path / "none.dlc", "--adapter", "none", "--json", env={"ARCHIVER_CONFIG": str(cfg)})
    assert r.exit_code == 0 and json.loads(r.output)["adapter_sha256"] is None
    cfg.write_text(f"backbone: diffusers\ndiffusers_model: {model}\nadapter: 5\n")
    r = run_cli("decode", dlc, tmp_path / "c.png", env={"ARCHIVER_CONFIG": str(cfg)})
    assert r.exit_code == 2 and "adapter" in r.output
    cfg.write_text("backbone: tiny\nadapter: /somewhere\n")
    r = run_cli("decode", dlc, tmp_path / "c.png", env={"ARCHIVER_CONFIG": str(cfg)})
    assert r.exit_code == 2 and "backbone: diffusers" in r.output


def test_refusal_is_one_line_and_exit_code_10_for_a_real_process(adapted, held_out, tmp_path):
    dlc = tmp_path / "f.dlc"
    dlc.write_bytes(pipeline.encode_image(load_image(held_out[0]), adapted, quality=50, steps=0).data)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("ARCHIVER_CONFIG", None)
    p = subprocess.run([sys.executable, "-m", "archiver", "decode", str(dlc), str(tmp_path / "f.png"), "--model",
                        str(model_dir())], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 10
    assert p.stderr.strip().splitlines()[-1].startswith("archiver: error: this file was coded with adapter")
    assert "Traceback" not in p.stderr


def test_tiny_model_training_command_is_unchanged(tmp_path):
    """``archiver train DATA_DIR`` still means the embedded model (``train`` is now a group)."""
    r = run_cli("train", tmp_path / "missing", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "not found" in r.output
    r = run_cli("train", "--help")
    assert r.exit_code == 0 and "adapter" in r.output and "tiny" in r.output


def test_bench_measures_the_codec_with_the_adapter(trained, held_out, tmp_path):
    """``archiver bench --backbone diffusers --model M --adapter A``: the files it measures are
    coded with the adapter (the way to compare against the generic model on a GPU later)."""
    from archiver.bench.runner import BenchConfig, run_bench

    d = tmp_path / "imgs"
    d.mkdir()
    shutil.copy(held_out[0], d / "a.png")
    cfg = dict(images=d, bpps=(0.1,), codecs=("ours",), crop_images=0, backbone="diffusers",
               model_path=str(model_dir()), device="cpu", steps=1, show_progress=False, skip={"lpips", "fid"})
    with_adapter = run_bench(BenchConfig(adapter=str(trained[0]), **cfg))
    generic = run_bench(BenchConfig(**cfg))
    assert with_adapter["environment"]["backbone"]["adapter"]["sha256"] == adapter_digest(trained[0])
    assert with_adapter["config"]["adapter"] == str(trained[0])
    assert "adapter" not in generic["environment"]["backbone"]
    (a,), (g,) = with_adapter["records"], generic["records"]
    # the adapter's steps follow the latent's scale, so rate control reaches the target; the
    # generic steps (1.0) cannot on this random model's tiny latents (issue 16's question)
    assert a["bpp"] == pytest.approx(0.1, rel=0.1) and g["bpp"] < a["bpp"]


def test_migrate_codes_with_the_configured_adapter_and_restore_needs_it(trained, held_out, tmp_path):
    """The storage path a user takes: `adapter:` in the config, `archiver migrate` writes .dlc
    files that name it, `archiver restore` without it is refused (exit 10, nothing changed) and
    with it restores the picture. Quality floors are zero: the tiny model's weights are random."""
    from test_service_helpers import FAST_POLICY, catalog_rows, setup_env, write_config

    policy = tmp_path / "diffusion.yaml"
    policy.write_text(FAST_POLICY.replace("rules:\n", "rules:\n  - name: photos\n    when:\n      path: [\"**/photos/**\"]\n"
                                          "    action: diffusion\n    allow_generative: true\n    bpp: 0.1\n    floor: {min_psnr: 0, min_ms_ssim: 0, max_phash_distance: 64, max_dhash_distance: 64}\n"))
    e = setup_env(tmp_path, policy=str(policy), backbone="diffusers", diffusers_model=str(model_dir()),
                  adapter=str(trained[0]), device="cpu")
    photo = e["root"] / "photos" / "a.png"
    photo.parent.mkdir()
    shutil.copy(held_out[0], photo)
    env = {"ARCHIVER_HOME": str(e["home"]), "ARCHIVER_CONFIG": str(e["config"])}
    r = run_cli("migrate", e["root"], "--json", "--executor", "thread", env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["by_outcome"] == {"committed": 1}
    row = [x for x in catalog_rows(e["home"]) if x["path"] == str(photo)][-1]
    assert row["action"] == "diffusion" and not photo.exists()
    dlc = Path(row["compressed_path"])
    assert read_header(dlc.read_bytes()).adapter_sha256 == adapter_digest(trained[0])

    r = run_cli("doctor", "--json", env=env)  # the operator's check names the adapter in use
    model = {c["name"]: c for c in json.loads(r.output)["checks"]}["model"]
    assert model["status"] == "ok" and model["data"]["adapter_sha256"] == adapter_digest(trained[0])
    write_config(e["config"], **{**e["settings"], "adapter": str(tmp_path / "missing.adapter")})
    r = run_cli("doctor", "--json", env=env)
    model = {c["name"]: c for c in json.loads(r.output)["checks"]}["model"]
    assert r.exit_code == 1 and model["status"] == "fail" and "adapter not found" in model["detail"], r.output

    write_config(e["config"], **{k: v for k, v in e["settings"].items() if k != "adapter"})
    r = run_cli("restore", photo, env=env)
    assert r.exit_code == 10 and "no adapter is loaded" in r.output, r.output
    assert "Traceback" not in r.output and not photo.exists() and dlc.is_file()

    other = another_adapter(trained[0], tmp_path / "other.adapter")  # for the same model: refused too
    write_config(e["config"], **{**e["settings"], "adapter": str(other)})
    r = run_cli("restore", photo, "--json", env=env)
    assert r.exit_code == 10, r.output
    (res,) = json.loads(r.output)["results"]
    assert res["status"] == "error" and res["exit_code"] == 10 and "decode with --adapter" in res["message"]
    assert not photo.exists() and dlc.is_file()

    write_config(e["config"], **e["settings"])
    r = run_cli("restore", photo, "--json", env=env)
    assert r.exit_code == 0, r.output
    assert Image.open(photo).size == Image.open(held_out[0]).size
