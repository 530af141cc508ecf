"""The diffusers backbone loads SD-layout folders from disk (the SD 2.1 code path) and the
registry hands out backbones by name."""

import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from archiver.codecs.diffusion import pipeline
from archiver.codecs.diffusion.backbones import get_backbone
from archiver.codecs.diffusion.backbones.diffusers_backbone import DiffusersBackbone, weights_digest
from archiver.testing.codec import tiny_sd_dir
from archiver.errors import UsageError, WeightsMismatchError
from archiver.imageio import load_image


@pytest.fixture(scope="module")
def sd():
    return DiffusersBackbone.from_pretrained(tiny_sd_dir(), device="cpu")


def _loaded(w=37, h=29):
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return load_image(buf.getvalue())


def test_sd_layout_loads_with_empty_prompt_embedding(sd):
    assert sd.id == "diffusers" and sd.stride == 8 and sd.latent_channels == 4
    assert sd.dtype == torch.float32 and sd.device.type == "cpu"
    assert sd._ehs.shape == (1, 8, 16)  # (batch, tokenizer max length, text hidden size)
    assert len(sd.weights_digest) == 64 and sd.weights_digest == weights_digest(tiny_sd_dir())


def test_interface_shapes(sd):
    x = torch.rand(1, 3, 24, 40) * 2 - 1
    z = sd.encode(x)
    assert z.shape == (1, 4, 3, 5)
    # the UNet downsamples too: odd latent sizes are padded inside model_output and cropped back
    assert sd.model_output(z, 10).shape == z.shape
    assert sd.decode(z).shape == (1, 3, 24, 40)


def test_sd_round_trip_with_diffusion(sd):
    img = _loaded()
    r = pipeline.encode_image(img, sd, quality=60, steps=2)
    d = pipeline.decode_bytes(r.data, sd)
    assert d.image.size == (37, 29)
    assert np.array_equal(np.asarray(d.image), np.asarray(pipeline.decode_bytes(r.data, sd).image))


def test_unconditional_v_prediction_model_loads_and_decodes():
    bb = DiffusersBackbone.from_pretrained(tiny_sd_dir(conditional=False, prediction_type="v_prediction"),
                                           device="cpu")
    assert bb._ehs is None and bb.scheduler.config.prediction_type == "v_prediction"
    r = pipeline.encode_image(_loaded(16, 16), bb, quality=10, steps=2)
    assert r.t > 0
    assert pipeline.decode_bytes(r.data, bb).image.size == (16, 16)


def test_autoencoder_tiny_layout_loads_and_decodes():
    bb = DiffusersBackbone.from_pretrained(tiny_sd_dir(conditional=False, vae_kind="tiny"), device="cpu")
    assert type(bb.vae).__name__ == "AutoencoderTiny" and bb.stride == 8 and bb.latent_channels == 4
    r = pipeline.encode_image(_loaded(20, 12), bb, quality=30, steps=1)
    assert pipeline.decode_bytes(r.data, bb).image.size == (20, 12)


def test_digest_changes_with_the_weights(tmp_path, sd):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_sd_dir(), copy)
    assert weights_digest(copy) == sd.weights_digest, "the digest depends on content, not location"
    f = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    assert weights_digest(copy) != sd.weights_digest


def test_other_weights_are_refused(sd):
    r = pipeline.encode_image(_loaded(), sd, quality=50)
    from archiver.testing.codec import build_tiny_sd
    import tempfile

    other = DiffusersBackbone.from_pretrained(build_tiny_sd(tempfile.mkdtemp() + "/m", seed=1), device="cpu")
    with pytest.raises(WeightsMismatchError):
        pipeline.decode_bytes(r.data, other)


def test_from_components_reuses_the_same_code(sd):
    bb = DiffusersBackbone.from_components(sd.vae, sd.unet, sd.scheduler, backbone_id="custom",
                                           weights_digest="cd" * 32, encoder_hidden_states=sd._ehs,
                                           channel_steps=torch.full((4,), 2.0), device="cpu")
    assert bb.id == "custom" and bb.stride == 8
    r = pipeline.encode_image(_loaded(), bb, quality=50)
    assert r.data[14:20] == b"custom"
    # trained per-channel steps are used: twice the step of the default
    from archiver.codecs.diffusion.container import read_header

    assert read_header(r.data).delta == [2.0] * 4


def test_registry(tmp_path):
    assert get_backbone("diffusers", model_path=str(tiny_sd_dir()), device="cpu") is \
        get_backbone("diffusers", model_path=str(tiny_sd_dir()), device="cpu")
    with pytest.raises(UsageError, match="unknown backbone"):
        get_backbone("nope")
    with pytest.raises(UsageError, match="needs a model"):
        get_backbone("diffusers")
    with pytest.raises(UsageError, match="not a directory"):
        get_backbone("diffusers", model_path=str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="not a diffusers model folder"):
        get_backbone("diffusers", model_path=str(tmp_path))


def test_repo_id_resolves_from_the_hugging_face_cache_only(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    from archiver.codecs.diffusion.backbones.diffusers_backbone import resolve_model_dir

    repo = tmp_path / "models--acme--tiny-sd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    shutil.copytree(tiny_sd_dir(), repo / "snapshots" / "0123abcd")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_dir("acme/tiny-sd") == repo / "snapshots" / "0123abcd"
    with pytest.raises(UsageError, match="Hugging Face cache"):
        resolve_model_dir("acme/not-cached")


def test_large_images_go_through_the_vae_in_tiles(sd):
    """Large photos are tiled (bounded memory); tiles blend, and decoding stays deterministic."""
    img = _loaded(90, 70)
    try:
        sd.set_vae_tile(32)
        r = pipeline.encode_image(img, sd, quality=60, steps=1)
        a = np.asarray(pipeline.decode_bytes(r.data, sd).image)
        b = np.asarray(pipeline.decode_bytes(r.data, sd).image)
    finally:
        from archiver.codecs.diffusion.backbones.diffusers_backbone import VAE_TILE

        sd.set_vae_tile(VAE_TILE)
    assert a.shape == (70, 90, 3) and np.array_equal(a, b)
    untiled = np.asarray(pipeline.decode_bytes(r.data, sd).image)
    assert not np.array_equal(a, untiled), "the tiled path really ran"


def test_pixels_do_not_depend_on_the_callers_thread_count():
    """CPU kernels split sums by thread count (unpinned, 1 vs 3 threads differ by a level here);
    the codec pins it so that a later verify matches what encode measured."""
    tiny = pytest.importorskip("archiver.codecs.diffusion.backbones.tiny")
    sd = tiny.random_tiny(0, device="cpu")  # wide enough layers for the effect to show
    r = pipeline.encode_image(_loaded(160, 120), sd, quality=40, steps=2)
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 3):
            torch.set_num_threads(n)
            outs.append(np.asarray(pipeline.decode_bytes(r.data, sd).image))
            assert torch.get_num_threads() == n, "the caller's setting is restored"
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(outs[0], outs[1])


def test_folder_without_safetensors_or_with_broken_weights_is_a_usage_error(tmp_path):
    bad = tmp_path / "m"
    shutil.copytree(tiny_sd_dir(conditional=False), bad)
    w = bad / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(b"not safetensors")
    with pytest.raises(UsageError, match="cannot load"):
        DiffusersBackbone.from_pretrained(bad, device="cpu")
    for f in bad.rglob("*.safetensors"):
        f.unlink()
    with pytest.raises(UsageError, match="no safetensors"):
        DiffusersBackbone.from_pretrained(bad, device="cpu")


def test_large_latents_are_denoised_in_blended_tiles(sd):
    """A pointwise denoiser gives the same output tiled or whole; a real one stays deterministic."""
    from types import SimpleNamespace

    class Pointwise(torch.nn.Module):
        config = SimpleNamespace(block_out_channels=[4], cross_attention_dim=None)

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 1)

        def forward(self, z, t):
            return SimpleNamespace(sample=self.conv(z))

    bb = DiffusersBackbone.from_components(sd.vae, Pointwise(), sd.scheduler, backbone_id="p",
                                           weights_digest="00" * 32, device="cpu")
    z = torch.randn(1, 4, 23, 37)
    whole = bb.model_output(z, 50)
    bb.unet_tile = 8
    tiled = bb.model_output(z, 50)
    assert torch.allclose(whole, tiled, atol=1e-5)
    try:
        sd.unet_tile = 12
        small = z[..., :20, :20]  # 2 x 2 tiles
        a, b = sd.model_output(small, 50), sd.model_output(small, 50)
    finally:
        from archiver.codecs.diffusion.backbones.diffusers_backbone import UNET_TILE

        sd.unet_tile = UNET_TILE
    assert a.shape == small.shape and torch.equal(a, b)
