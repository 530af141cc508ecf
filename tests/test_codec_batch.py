"""Issue 27: the diffusion codec's batched path (for a GPU), checked on the CPU against one-by-one
coding: the encoder's analysis batched across images gives the same latents and the very same
.dlc bytes; the denoiser and decoder batched across files give the same pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from archiver.codecs.diffusion import pipeline, sampler
from archiver.codecs.diffusion.backbones import get_backbone
from archiver.imageio import load_image
from archiver.testing.codec import PoolBackbone


def _img(w, h, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255.0 / w, yy * 255.0 / h, 128 + 60 * np.sin(xx / (3.0 + seed))], -1)
    rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return load_image(buf.getvalue())


@pytest.fixture(scope="module")
def tiny():
    return get_backbone("tiny")


@pytest.fixture(scope="module")
def images():
    # three of one size (one batch of 2 and one of 1 with batch=2), one of another size
    return [_img(96, 64, 1), _img(96, 64, 2), _img(80, 48, 3), _img(96, 64, 4)]


def test_batched_analysis_gives_the_same_latents_and_bytes(tiny, images):
    one = [pipeline.QualityProbe(img, tiny) for img in images]
    many = pipeline.QualityProbe.many(images, tiny, batch=2)
    for a, b in zip(one, many):
        assert a.coder.y.shape == b.coder.y.shape
        assert torch.allclose(a.coder.y, b.coder.y, atol=1e-5, rtol=0)
        for q in (20, 60):
            assert a.file_at(q) == b.file_at(q)  # the entropy-coded file: bit-exact


def test_batched_decode_gives_the_same_pixels(tiny, images):
    files = [pipeline.QualityProbe(img, tiny).file_at(q)[0] for img, q in zip(images, (40, 40, 40, 70))]
    files.append(files[0])  # the same file twice in one batch
    one = [pipeline.decode_bytes(d, tiny) for d in files]
    many = pipeline.decode_many(files, tiny, batch=3)
    assert len(many) == len(files)
    for a, b in zip(one, many):
        assert a.image.size == b.image.size and a.image.mode == b.image.mode and a.header == b.header
        diff = np.abs(np.asarray(a.image, dtype=int) - np.asarray(b.image, dtype=int))
        assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


def test_each_stream_keeps_its_own_sampler_noise():
    """A backbone that samples with noise (eta > 0): a batch draws, for each latent, the noise
    its stream would draw alone."""
    bb = PoolBackbone()
    bb.eta = 0.7
    y = torch.randn(3, bb.latent_channels, 4, 5,
                    generator=torch.Generator().manual_seed(0))
    seeds = [11, 12, 11]
    with torch.no_grad():
        batch = sampler.denoise_many(bb, y, 300, 4, seeds)
        alone = [sampler.denoise(bb, y[i:i + 1], 300, 4, seed=s) for i, s in enumerate(seeds)]
    for i in range(3):
        assert torch.allclose(batch[i:i + 1], alone[i], atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])  # other seeds, other noise
    with pytest.raises(ValueError, match="seeds"):
        sampler.denoise_many(bb, y, 300, 4, seeds[:2])


def _rgba(w, h, seed):
    img = _img(w, h, seed)
    rgba = img.rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(w * h).reshape(h, w) % 251).astype(np.uint8)))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    return load_image(buf.getvalue())


@pytest.mark.parametrize("make", [lambda: _img(96, 64, 5), lambda: _rgba(72, 40, 6)])
def test_a_probe_decodes_its_own_files_without_entropy_decoding(tiny, make, monkeypatch):
    """The search decodes each probe from the symbols the encoder coded: the same pixels (and
    mode, alpha) as a full decode of the bytes, and no entropy decoding on the way."""
    img = make()
    probe = pipeline.QualityProbe(img, tiny)
    files = [probe.file_at(q)[0] for q in (15, 50, 85)]
    full = [pipeline.decode_bytes(d, tiny) for d in files]
    calls = []
    real = pipeline.get_entropy_model
    monkeypatch.setattr(pipeline, "get_entropy_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    for d, want in zip(files, full):
        got = probe.decode(d)
        assert got.image.mode == want.image.mode and got.header == want.header
        assert got.image.tobytes() == want.image.tobytes()
    assert calls == []
    other = pipeline.QualityProbe(_img(96, 64, 9), tiny).file_at(50)[0]  # not this probe's: a full decode
    assert probe.decode(other).image.tobytes() == pipeline.decode_bytes(other, tiny).image.tobytes() and calls


#: a floor an untrained backbone can meet: a low score and no structure check (random weights do
#: not keep the picture's perceptual hash; the test is about which steps run, not about quality)
LOOSE = {"min_ssimulacra2": 20.0, "max_phash_distance": 64, "max_dhash_distance": 64}


def test_the_codecs_search_does_not_entropy_decode_its_probes(tiny, monkeypatch):
    from archiver.codecs import Source, Target
    from archiver.codecs.diffusion.codec import DiffusionCodec

    img = _img(96, 64, 7)
    calls = []
    real = pipeline.get_entropy_model
    monkeypatch.setattr(pipeline, "get_entropy_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    enc = DiffusionCodec(backbone=tiny).encode(Source(img, b"x" * 10**6), Target(floor=LOOSE))
    assert len([p for p in enc.params["probes"] if p.get("score") is not None]) >= 2 and calls == []
    v = DiffusionCodec(backbone=tiny).verify(enc.data, Source(img, b""), Target(floor=LOOSE))
    assert calls and v.score == enc.quality["score"]  # the read-back check decodes in full: the same score


def test_the_gpu_bench_runs_on_a_cpu_and_checks_itself(tmp_path):
    """bench/gpu_batch.py (the command for a GPU machine, docs/operations.md) end to end on the
    CPU: every stage timed, the bottleneck named, and the batched bytes/pixels checked."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    for i, (w, h) in enumerate([(64, 48), (64, 48), (48, 64)]):
        Image.fromarray(np.asarray(_img(w, h, i).rgb)).save(tmp_path / f"{i}.png")
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "bench" / "gpu_batch.py"), str(tmp_path), "--device", "cpu",
                        "--count", "3", "--batch", "2", "--threads", "1", "--check", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["images"] == 3 and rep["device"] == "cpu" and rep["bottleneck"] in rep["seconds"]
    assert rep["check"]["same_bytes"] and rep["check"]["max_pixel_difference"] <= 1
