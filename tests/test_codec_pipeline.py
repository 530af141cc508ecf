"""encode_image / decode_bytes: sizes, modes, rate accounting and control, determinism, metadata.

Most tests use ``PoolBackbone`` (a transparent 8x8-average "autoencoder" whose denoiser is the
identity) so pixels can be checked; the real diffusers code path is covered with a tiny random
Stable Diffusion model in test_codec_backbones.py and test_codec_cli.py.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from archiver.codecs.diffusion import container, files, pipeline
from archiver.testing.codec import PoolBackbone
from archiver.errors import ContainerError, UsageError, WeightsMismatchError
from archiver.imageio import load_image
from archiver.metrics import psnr


def _photo(w=64, h=48, seed=0, mode="RGB"):
    """Smooth colour ramps plus mild texture: compressible, but not trivially."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255.0 / max(w - 1, 1), yy * 255.0 / max(h - 1, 1), 128 + 60 * np.sin(xx / 5.0)], -1)
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    return img if mode == "RGB" else img.convert(mode)


def _png(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def _loaded(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return load_image(buf.getvalue())


@pytest.fixture(scope="module")
def pool():
    return PoolBackbone()


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (64, 48), (48, 64), (65, 33), (130, 9)])
def test_any_size_round_trips(pool, size):
    img = _photo(*size)
    r = pipeline.encode_image(_loaded(img), pool, quality=80)
    d = pipeline.decode_bytes(r.data, pool)
    assert d.image.size == size and d.image.mode == "RGB"
    assert (r.width, r.height) == size


def test_reconstruction_is_close_and_improves_with_quality(pool):
    img = _photo(96, 64)
    scores = []
    for q in (20, 50, 90):
        r = pipeline.encode_image(_loaded(img), pool, quality=q)
        scores.append((r.bpp, psnr(img, pipeline.decode_bytes(r.data, pool).image)))
    assert scores[0][0] < scores[1][0] < scores[2][0], "rate must grow with quality"
    assert scores[0][1] < scores[2][1], "distortion must fall with quality"
    # the 8x8 average of a smooth ramp is a fair approximation of it
    assert scores[2][1] > 20


def test_reported_bpp_is_the_real_file_size(pool):
    img = _photo(64, 48)
    r = pipeline.encode_image(_loaded(img), pool, quality=60)
    assert r.bpp == len(r.data) * 8 / (64 * 48)
    assert r.size_bytes == len(r.data)


@pytest.mark.parametrize("target", [0.1, 0.2, 0.4])
def test_rate_control_lands_within_ten_percent(pool, target):
    img = _photo(160, 120, seed=3)
    r = pipeline.encode_image(_loaded(img), pool, bpp=target)
    assert r.rate_note is None
    assert abs(r.bpp - target) / target <= 0.10, (r.bpp, target)
    assert r.bpp == len(r.data) * 8 / (160 * 120)


def test_unreachable_rate_is_said_clearly(pool):
    img = _photo(8, 8)
    r = pipeline.encode_image(_loaded(img), pool, bpp=0.01)  # the header alone is far more
    assert r.rate_note and "below the lowest rate" in r.rate_note
    assert r.bpp > 0.01


def test_same_bytes_decode_to_identical_pixels(pool):
    r = pipeline.encode_image(_loaded(_photo()), pool, quality=40)
    a = np.asarray(pipeline.decode_bytes(r.data, pool).image)
    b = np.asarray(pipeline.decode_bytes(r.data, pool).image)
    assert np.array_equal(a, b)
    again = pipeline.encode_image(_loaded(_photo()), pool, quality=40)
    assert again.data == r.data, "encoding is deterministic too"


def test_t_follows_the_quantization_noise(pool):
    """Coarser steps mean more noise, so a later diffusion step (SNR matching)."""
    ts = [pipeline.encode_image(_loaded(_photo()), pool, quality=q).t for q in (90, 50, 10)]
    assert ts[0] < ts[1] < ts[2]
    ac = pool.scheduler.alphas_cumprod
    r = pipeline.encode_image(_loaded(_photo()), pool, quality=50)  # s = 1: sigma^2 = 1/12
    assert abs(float(ac[r.t]) - 1 / (1 + 1 / 12)) < 0.01
    h = container.read_header(r.data)
    assert (h.t, h.steps) == (r.t, 4)


def test_decoder_runs_ddim_from_t_with_the_requested_steps():
    bb = PoolBackbone()
    r = pipeline.encode_image(_loaded(_photo()), bb, quality=30, steps=3)
    bb.calls.clear()
    pipeline.decode_bytes(r.data, bb)
    assert len(bb.calls) == 3 and bb.calls[0] == r.t and bb.calls == sorted(bb.calls, reverse=True)
    bb.calls.clear()
    pipeline.decode_bytes(r.data, bb, steps=0)
    assert bb.calls == [], "steps=0 is a plain autoencoder decode"


def test_ddim_identity_for_v_prediction():
    """With a denoiser that sees no noise, DDIM must give back y_hat for v-prediction too."""
    bb = PoolBackbone("v_prediction")
    img = _photo()
    r = pipeline.encode_image(_loaded(img), bb, quality=70)
    with_diffusion = np.asarray(pipeline.decode_bytes(r.data, bb).image, dtype=int)
    plain = np.asarray(pipeline.decode_bytes(r.data, bb, steps=0).image, dtype=int)
    assert np.abs(with_diffusion - plain).max() <= 1


def test_search_t_tries_candidates_and_keeps_the_best(pool):
    r = pipeline.encode_image(_loaded(_photo()), pool, quality=40, search_t=True)
    assert len(r.t_search) >= 3
    best = max(x["ms_ssim"] for x in r.t_search)
    assert [x["ms_ssim"] for x in r.t_search if x["t"] == r.t][0] == best
    assert container.read_header(r.data).t == r.t


def test_roi_gets_finer_steps(pool):
    img = _photo(96, 64, seed=5)
    plain = pipeline.encode_image(_loaded(img), pool, quality=30)
    roi = pipeline.encode_image(_loaded(img), pool, quality=30, roi=[(0, 0, 48, 32)], roi_factor=4.0)
    box = (0, 0, 48, 32)
    p_plain = psnr(img, pipeline.decode_bytes(plain.data, pool, steps=0).image, box=box)
    p_roi = psnr(img, pipeline.decode_bytes(roi.data, pool, steps=0).image, box=box)
    assert p_roi > p_plain
    assert container.read_header(roi.data).roi == [(0, 0, 6, 4)]


@pytest.mark.parametrize("mode,expected", [("L", "L"), ("RGBA", "RGBA"), ("LA", "LA"), ("P", "RGB"),
                                           ("I;16", "I;16"), ("CMYK", "RGB")])
def test_modes_are_restored_where_sensible(pool, mode, expected):
    base = _photo(33, 21)
    if mode == "RGBA":
        img = base.copy()
        img.putalpha(Image.fromarray((np.arange(33 * 21).reshape(21, 33) % 256).astype(np.uint8)))
    elif mode == "LA":
        img = Image.merge("LA", (base.convert("L"), Image.new("L", base.size, 77)))
    elif mode == "I;16":
        img = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        assert img.mode == "I;16"
    else:
        img = base.convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    loaded = _loaded(img, fmt)
    d = pipeline.decode_bytes(pipeline.encode_image(loaded, pool, quality=90).data, pool)
    assert d.image.mode == expected and d.image.size == img.size
    if "A" in mode:  # alpha is kept losslessly
        assert np.array_equal(np.asarray(d.image.getchannel("A")), np.asarray(img.getchannel("A")))


def test_palette_with_transparency_keeps_alpha(pool):
    img = _photo(20, 10).convert("P")
    a = np.asarray(img).copy()
    a[:5] = 0  # top half uses the transparent index
    img = Image.fromarray(a, "P")
    img.putpalette(_photo(20, 10).convert("P").getpalette())
    img.info["transparency"] = 0
    d = pipeline.decode_bytes(pipeline.encode_image(_loaded(img), pool, quality=80).data, pool)
    assert d.image.mode == "RGBA"
    alpha = np.asarray(d.image.getchannel("A"))
    assert (alpha[:5] == 0).all() and (alpha[5:] == 255).all()


def test_metadata_travels_through_the_bitstream(pool):
    exif = Image.Exif()
    exif[0x010F] = "ArchiverCam"  # Make
    icc = b"\x00\x00\x02\x0cfake-icc-profile" * 4
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    img = _photo(16, 16)
    loaded = _loaded(img, "JPEG", exif=exif.tobytes(), icc_profile=icc, xmp=xmp)
    r = pipeline.encode_image(loaded, pool, quality=50)
    d = pipeline.decode_bytes(r.data, pool)
    assert d.metadata.icc_profile == icc
    assert d.metadata.xmp == xmp
    restored = Image.Exif()
    restored.load(d.metadata.exif)
    assert restored[0x010F] == "ArchiverCam"
    out = load_image(files.image_bytes(d, "PNG"))  # and they are written to the output file
    assert out.metadata.icc_profile == icc and out.metadata.xmp == xmp
    assert out.metadata.exif and b"ArchiverCam" in out.metadata.exif


def test_exif_orientation_is_applied_before_coding(pool):
    """A landscape stored with 'rotate 90 CW' comes back as an upright portrait, left half red."""
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:16] = (255, 0, 0)  # top rows red: after rotating 90 CW they become the right... side
    stored[16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = _loaded(Image.fromarray(stored), "JPEG", exif=exif.tobytes(), quality=95)
    assert (loaded.width, loaded.height) == (32, 64)
    d = pipeline.decode_bytes(pipeline.encode_image(loaded, pool, quality=90).data, pool)
    a = np.asarray(d.image, dtype=int)
    assert d.image.size == (32, 64)
    assert a[:, 24:, 0].mean() > 200 and a[:, :8, 2].mean() > 200  # rotated 90 CW: top -> right
    e = Image.Exif()
    e.load(d.metadata.exif)
    assert e.get(0x0112, 1) == 1, "the orientation tag must not rotate it a second time"


def test_weights_mismatch_is_refused(pool):
    r = pipeline.encode_image(_loaded(_photo()), pool, quality=50)
    other = PoolBackbone()
    other.weights_digest = "11" * 32
    with pytest.raises(WeightsMismatchError, match="weights"):
        pipeline.decode_bytes(r.data, other)


def test_damaged_bytes_never_reach_the_model(pool):
    r = pipeline.encode_image(_loaded(_photo()), pool, quality=50)
    bad = bytearray(r.data)
    bad[len(bad) // 2] ^= 1
    pool.calls.clear()
    with pytest.raises(ContainerError):
        pipeline.decode_bytes(bytes(bad), pool)
    with pytest.raises(ContainerError):
        pipeline.decode_bytes(r.data[:-1], pool)
    assert pool.calls == []


def test_bad_arguments(pool):
    loaded = _loaded(_photo())
    with pytest.raises(UsageError):
        pipeline.encode_image(loaded, pool, bpp=0.1, quality=50)
    with pytest.raises(UsageError):
        pipeline.encode_image(loaded, pool, bpp=-1)
    with pytest.raises(UsageError):
        pipeline.encode_image(loaded, pool, quality=101)


def test_trained_hyperprior_is_used_when_the_backbone_has_one():
    from archiver.codecs.diffusion.entropy import HyperpriorEntropyModel

    torch.manual_seed(0)
    bb = PoolBackbone()
    model = HyperpriorEntropyModel(4, 8).eval()
    model.update(force=True)
    bb.entropy_model = lambda: model
    img = _photo(64, 48)
    r = pipeline.encode_image(_loaded(img), bb, quality=50)
    assert r.entropy_model == "trained" and container.read_header(r.data).entropy_kind == 1
    generic = pipeline.encode_image(_loaded(img), PoolBackbone(), quality=50)
    a = np.asarray(pipeline.decode_bytes(r.data, bb, steps=0).image)
    b = np.asarray(pipeline.decode_bytes(generic.data, PoolBackbone(), steps=0).image)
    assert np.array_equal(a, b), "the entropy model changes bits, never pixels"


def test_a_file_claiming_huge_dimensions_is_refused_before_decoding(pool):
    r = pipeline.encode_image(_loaded(_photo(64, 48)), pool, quality=50)
    pool.calls.clear()
    with pytest.raises(ContainerError, match="over the limit"):
        pipeline.decode_bytes(r.data, pool, max_pixels=1000)
    assert pool.calls == []


def test_more_protected_regions_than_the_header_holds_are_merged(pool):
    boxes = [((i % 20) * 8, (i // 20) * 8, (i % 20) * 8 + 8, (i // 20) * 8 + 8) for i in range(300)]
    r = pipeline.encode_image(_loaded(_photo(160, 160)), pool, quality=50, roi=boxes)
    assert container.read_header(r.data).roi == [(0, 0, 20, 15)]


def test_backbone_t_scale_calibrates_the_snr_match():
    bb = PoolBackbone()
    plain = pipeline.encode_image(_loaded(_photo()), bb, quality=30)
    bb.t_scale = 0.5
    scaled = pipeline.encode_image(_loaded(_photo()), bb, quality=30)
    assert scaled.t_snr == plain.t_snr == plain.t
    assert scaled.t == round(plain.t_snr * 0.5) and container.read_header(scaled.data).t == scaled.t
