"""The lossless action: JPEG -> JPEG XL gives the identical JPEG back; other formats give
identical pixels and metadata (and identical bytes when the original was written like we write)."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image, PngImagePlugin

from archiver.catalog.testing import smooth_image
from archiver.errors import ArchiverError
from archiver.storage import lossless


def _jpeg(**kw):
    b = io.BytesIO()
    mode = kw.pop("mode", "RGB")
    Image.fromarray(smooth_image(1, (80, 56))).convert(mode).save(b, "JPEG", **kw)
    return b.getvalue()


@pytest.mark.parametrize("kw", [
    {"quality": 90},
    {"quality": 75, "progressive": True},
    {"quality": 85, "mode": "L"},
    {"quality": 95, "subsampling": 0, "exif": b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"},
])
def test_jpeg_roundtrip_is_byte_exact(kw):
    src = _jpeg(**kw)
    data, ext = lossless.compress(src)
    assert ext == ".jxl"
    assert data[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n"  # a standard JPEG XL container
    assert lossless.restore(data) == src


def test_png_keeps_pixels_and_metadata():
    im = Image.fromarray(smooth_image(2) // 32 * 32)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "hello")
    b = io.BytesIO()
    im.save(b, "PNG", pnginfo=info, dpi=(300, 300))
    src = b.getvalue()
    data, ext = lossless.compress(src)
    assert ext == ".axl"
    back = lossless.restore(data)
    assert lossless.same_pixels(back, src)
    r = Image.open(io.BytesIO(back))
    assert r.text["Comment"] == "hello"
    assert round(r.info["dpi"][0]) == 300


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"])
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_modes_pixel_exact(mode, fmt):
    if mode == "I;16":
        im = Image.fromarray((smooth_image(3)[..., 0].astype("uint16") * 257))
    else:
        im = Image.fromarray(smooth_image(3)).convert("RGBA" if mode in ("RGBA", "LA") else "RGB").convert(mode)
    if mode == "LA" and fmt == "TIFF":
        pytest.skip("Pillow cannot write LA TIFF")
    b = io.BytesIO()
    im.save(b, fmt)
    src = b.getvalue()
    data, _ = lossless.compress(src)
    back = lossless.restore(data)
    assert lossless.same_pixels(back, src), (mode, fmt)
    if fmt == "PNG":  # Pillow-written PNGs come back byte for byte
        assert back == src


def test_icc_profile_kept():
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    b = io.BytesIO()
    Image.fromarray(smooth_image(4)).save(b, "PNG", icc_profile=icc)
    back = lossless.restore(lossless.compress(b.getvalue())[0])
    assert Image.open(io.BytesIO(back)).info["icc_profile"] == icc


@pytest.mark.parametrize("bad", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_unreadable_input_is_unsupported(bad):
    with pytest.raises(lossless.LosslessUnsupported):
        lossless.compress(bad)


def test_corrupt_compressed_data_is_an_error_not_a_crash():
    data, _ = lossless.compress(_jpeg(quality=90))
    with pytest.raises(ArchiverError):
        lossless.restore(data[: len(data) // 2])
    png = io.BytesIO()
    Image.fromarray(smooth_image(5)).save(png, "PNG")
    axl, _ = lossless.compress(png.getvalue())
    with pytest.raises(ArchiverError):
        lossless.restore(axl[:40])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 24), st.integers(1, 24), st.sampled_from(["RGB", "RGBA", "L"]), st.integers(0, 2**32 - 1))
def test_random_images_roundtrip_pixel_exact(w, h, mode, seed):
    rng = np.random.default_rng(seed)
    ch = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    a = rng.integers(0, 256, (h, w, ch), dtype=np.uint8)
    im = Image.fromarray(a[..., 0] if ch == 1 else a, mode)
    b = io.BytesIO()
    im.save(b, "PNG")
    back = lossless.restore(lossless.compress(b.getvalue())[0])
    assert lossless.same_pixels(back, b.getvalue())


def test_cmyk_jpeg_is_unsupported_and_trailing_data_kept():
    b = io.BytesIO()
    Image.fromarray(smooth_image(1, (160, 120))).convert("CMYK").save(b, "JPEG", quality=90)
    with pytest.raises(lossless.LosslessUnsupported):  # archive then keeps the original, with the reason
        lossless.compress(b.getvalue())
    src = _jpeg(quality=90) + b"bytes after the end-of-image marker"
    assert lossless.restore(lossless.compress(src)[0]) == src
