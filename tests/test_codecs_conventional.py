"""AVIF and lossy JPEG XL at the policy's floor (and within a byte budget), on real encoders."""

import io

import numpy as np
import pytest
from PIL import Image

from archiver.codecs import CodecRefused, Recorded, Source, Target, get_codec, image_digest
from archiver.imageio import load_image

FLOOR = {"min_psnr": 28.0, "min_ms_ssim": 0.9}


def _photo(w=128, h=112, seed=0, mode="RGB"):
    """Texture plus edges: the quality setting matters, and PNG is big."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([120 + 50 * np.sin(xx / (2.5 + c) + yy / 7) * np.cos(yy / (3 + c))
                     + 30 * np.sign(np.sin(xx / 11) * np.sin(yy / 9)) for c in range(3)], -1)
    a = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(a, "RGB")
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray((xx * 255 // w).astype(np.uint8)))
    elif mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _source(data, regions=()):
    return Source(load_image(data), data, list(regions))


@pytest.mark.parametrize("name", ["avif", "jxl"])
def test_the_smallest_file_that_meets_the_floor(name):
    codec = get_codec(name)
    src = _source(_photo())
    enc = codec.encode(src, Target(floor=FLOOR))
    assert enc.codec == name and enc.ext == codec.ext and enc.size < len(src.data) / 3
    v = codec.verify(enc.data, src, Target(floor=FLOOR))
    assert v.ok and v.psnr >= 28.0 and v.ms_ssim >= 0.9 and v.exact == "approx"
    q = enc.params["quality"]
    assert q > codec.quality_range[0]
    lower = codec.encode_at(src.image, q - 1)  # one notch lower: misses the floor, or saves nothing
    assert len(lower) >= enc.size or not codec.verify(lower, src, Target(floor=FLOOR)).ok
    assert enc.size < len(codec.encode_at(src.image, codec.quality_range[1]))


@pytest.mark.parametrize("name", ["avif", "jxl"])
def test_a_stricter_floor_costs_more_bytes_and_an_unreachable_one_is_refused(name):
    codec = get_codec(name)
    src = _source(_photo(seed=1))
    loose = codec.encode(src, Target(floor={"min_psnr": 25.0}))
    strict = codec.encode(src, Target(floor={"min_psnr": 32.0}))
    assert loose.size < strict.size
    with pytest.raises(CodecRefused, match="out of reach"):
        codec.encode(src, Target(floor={"min_psnr": 80.0}))


@pytest.mark.parametrize("name", ["avif", "jxl"])
def test_protected_regions_use_the_same_guard(name):
    codec = get_codec(name)
    data = _photo(seed=2)
    plain = codec.encode(_source(data), Target(floor={"min_psnr": 24.0}))
    guarded = _source(data, [(0, 0, 64, 64)])
    strict = codec.encode(guarded, Target(floor={"min_psnr": 24.0, "min_region_psnr": 34.0}))
    assert strict.size > plain.size
    v = codec.verify(strict.data, guarded, Target(floor={"min_region_psnr": 34.0}))
    assert v.ok and v.region_psnr >= 34.0
    assert not codec.verify(plain.data, guarded, Target(floor={"min_region_psnr": 34.0})).ok


@pytest.mark.parametrize("name", ["avif", "jxl"])
def test_a_byte_budget_gives_the_best_quality_that_fits(name):
    codec = get_codec(name)
    src = _source(_photo(seed=3))
    small = codec.encode(src, Target(floor={"min_psnr": 10.0}, budget_bytes=2000))
    big = codec.encode(src, Target(floor={"min_psnr": 10.0}, budget_bytes=6000))
    assert small.size <= 2000 < big.size <= 6000
    assert small.params["quality"] < big.params["quality"]
    with pytest.raises(CodecRefused, match="budget"):
        codec.encode(src, Target(floor={"min_psnr": 10.0}, budget_bytes=50))


@pytest.mark.parametrize("name", ["avif", "jxl"])
@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_gray_stays_gray_and_transparency_is_kept_and_measured(name, mode):
    codec = get_codec(name)
    src = _source(_photo(mode=mode, seed=4))
    enc = codec.encode(src, Target(floor={"min_psnr": 30.0}))
    out = codec.decode(enc.data)
    assert out.mode == mode
    assert codec.verify(enc.data, src, Target(floor={"min_psnr": 30.0})).ok


@pytest.mark.parametrize("name", ["avif", "jxl"])
def test_restore_gives_the_verified_reconstruction_with_the_original_metadata(name):
    codec = get_codec(name)
    img = Image.open(io.BytesIO(_photo(seed=5)))
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=98, exif=exif.tobytes())
    src = _source(buf.getvalue())
    enc = codec.encode(src, Target(floor={"min_psnr": 28.0}))
    v = codec.verify(enc.data, src, Target(floor={"min_psnr": 28.0}))
    back = codec.restore(enc.data, Recorded(reconstruction_sha256=v.reconstruction_sha256, format="JPEG", path="x.jpg"))
    assert back.exact == "approx" and back.data is None and image_digest(back.image) == v.reconstruction_sha256
    exif = Image.Exif()
    exif.load(back.image.info["exif"])  # the restore workflow writes it into the original's format
    assert exif.get(0x010F) == "TestCam"
    with pytest.raises(Exception, match="differs"):
        codec.restore(enc.data, Recorded(reconstruction_sha256="0" * 64, format="JPEG", path="x.jpg"))
    assert image_digest(codec.decode(enc.data)) == v.reconstruction_sha256, "decoding is deterministic"


def test_output_that_is_not_smaller_is_refused():
    from archiver.codecs.choice import Choice

    tiny = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tiny, "PNG")
    c = Choice("avif", {"floor": {"min_psnr": 20.0}})
    assert list(c.candidates(_source(tiny.getvalue()))) == []
    assert c.attempts[0].line().startswith("avif: output not smaller")


def test_damaged_artifacts_fail_verification_not_crash():
    codec = get_codec("jxl")
    src = _source(_photo(seed=6))
    enc = codec.encode(src, Target(floor={"min_psnr": 28.0}))
    v = codec.verify(enc.data[: len(enc.data) // 2], src, Target(floor={"min_psnr": 28.0}))
    assert not v.ok and "does not decode" in v.why
    assert not get_codec("avif").verify(enc.data, src, Target()).ok, "a JPEG XL file is not an AVIF"


def test_without_avif_support_the_chain_says_why_and_moves_on(monkeypatch):
    """A Pillow that cannot write AVIF: a clear reason (not Pillow's KeyError), then the next codec."""
    from PIL import features

    from archiver.codecs.choice import Choice

    real = features.check
    monkeypatch.setattr(features, "check", lambda f, *a, **k: False if f == "avif" else real(f, *a, **k))
    ch = Choice("avif", {"floor": FLOOR, "fallback": ["jxl", "lossless"]})
    codec, enc = next(ch.candidates(_source(_photo())))
    assert codec.name == "jxl" and enc.codec == "jxl"
    (a,) = ch.attempts
    assert (a.codec, a.ok) == ("avif", False) and a.why == ("unavailable (this Pillow cannot write AVIF "
                                                           "(Pillow >= 11.3 wheels include libavif))")
