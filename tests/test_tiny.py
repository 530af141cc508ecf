"""The embedded tiny backbone: the shipped weights load from safetensors without any network,
their digest is what the backbone reports, and an untrained one exists for tests."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from archiver.codec.backbones import tiny
from archiver.errors import UsageError

SHIPPED = tiny.WEIGHTS_DIR / tiny.WEIGHTS_FILE
needs_weights = pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped tiny weights in archiver/weights yet")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the tiny backbone tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_random_tiny_shapes_and_digest():
    b = tiny.random_tiny(seed=1)
    assert b.id == "tiny" and b.stride == 8 and b.latent_channels == 8
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    z = b.encode(x)
    assert z.shape == (1, 8, 4, 6)
    assert b.decode(z).shape == (1, 3, 32, 48)
    assert b.model_output(z, 10).shape == z.shape
    assert b.weights_digest != tiny.random_tiny(seed=2).weights_digest


def test_missing_weights_is_a_user_error(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        tiny.load_tiny(device="cpu", weights_dir=tmp_path)


@needs_weights
def test_shipped_weights_load_offline_and_digest_matches(no_network):
    from safetensors import safe_open

    b = tiny.load_tiny(device="cpu")
    assert b.weights_digest == tiny.weights_digest(tiny.WEIGHTS_DIR)
    assert len(b.weights_digest) == 64
    with safe_open(str(SHIPPED), "pt") as f:
        meta = json.loads(f.metadata()["config"])
    cfg = json.loads((tiny.WEIGHTS_DIR / tiny.CONFIG_FILE).read_text())
    assert meta == cfg
    data = cfg["training"]["ae"]["data"]
    assert data["files"] > 0 and len(data["file_list_sha256"]) == 64
    assert "kodak" not in data["path"].lower()
    assert b.channel_steps() is not None and b.entropy_model() is not None
    size = SHIPPED.stat().st_size + (tiny.WEIGHTS_DIR / tiny.CONFIG_FILE).stat().st_size
    assert size < 30 * 2**20


@needs_weights
def test_shipped_weights_reconstruct_an_image():
    """Trained weights reproduce a smooth test image far better than chance."""
    b = tiny.load_tiny(device="cpu")
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 96), indexing="ij")
    x = torch.stack([xx * 0.8, yy * 0.8, (xx * yy) * 0.8])[None]
    rec = b.decode(b.encode(x))
    mse = float(((rec.clamp(-1, 1) - x) ** 2).mean())
    assert 10 * torch.log10(torch.tensor(4.0 / mse)) > 20  # PSNR in dB over the [-1, 1] range


@needs_weights
def test_altered_weights_change_the_digest(tmp_path):
    for name in (tiny.CONFIG_FILE, tiny.WEIGHTS_FILE):
        (tmp_path / name).write_bytes((tiny.WEIGHTS_DIR / name).read_bytes())
    d0 = tiny.weights_digest(tmp_path)
    cfg = json.loads((tmp_path / tiny.CONFIG_FILE).read_text())
    cfg["note"] = "changed"
    (tmp_path / tiny.CONFIG_FILE).write_text(json.dumps(cfg))
    assert tiny.weights_digest(tmp_path) != d0


KODAK = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kodak"


@needs_weights
@pytest.mark.data
@pytest.mark.skipif(not KODAK.is_dir(), reason="../shared/data/kodak not present")
def test_shipped_autoencoder_quality_on_kodak():
    """The shipped autoencoder's ceiling does not regress (28.5 dB on these three, 26.95 dB over all 24)."""
    from archiver.imageio import load_image
    from archiver.train.evaluate import ae_only

    b = tiny.load_tiny(device="cpu")
    imgs = [load_image(KODAK / f"kodim{i:02d}.png") for i in (3, 7, 19)]
    res = ae_only(b, imgs)
    assert res["psnr"] > 26.0 and res["ms_ssim"] > 0.94
