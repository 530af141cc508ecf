"""load_image: every read of a user's image is explicit about modes, orientation and damage."""

import io

import numpy as np
import pytest
from PIL import Image

from archiver.errors import InputError
from archiver.imageio import load_image


def _bytes(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _rgb(w=12, h=8):
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_rgb_png():
    li = load_image(_bytes(_rgb()))
    assert (li.width, li.height, li.rgb.mode, li.original_mode) == (12, 8, "RGB", "RGB")
    assert li.alpha is None and not li.grayscale and li.bit_depth == 8 and li.notes == []
    assert li.original_format == "PNG"


def test_gray_16bit():
    a = (np.arange(96, dtype=np.uint16).reshape(8, 12) * 600)
    li = load_image(_bytes(Image.fromarray(a)))
    assert li.original_mode == "I;16" and li.bit_depth == 16 and li.grayscale
    assert li.rgb.mode == "RGB" and any("8 bits" in n for n in li.notes)
    g = np.asarray(li.rgb)[..., 0].astype(int)
    assert abs(g[-1, -1] - round(95 * 600 / 65535 * 255)) <= 1


def test_alpha_kept_only_when_it_carries_information():
    img = _rgb().convert("RGBA")
    assert load_image(_bytes(img)).alpha is None  # fully opaque
    img.putalpha(Image.new("L", img.size, 10))
    li = load_image(_bytes(img))
    assert li.alpha is not None and li.alpha.getextrema() == (10, 10)


def test_palette_and_cmyk_are_converted_with_a_note():
    li = load_image(_bytes(_rgb().convert("P")))
    assert li.original_mode == "P" and li.rgb.mode == "RGB" and any("palette" in n for n in li.notes)
    li = load_image(_bytes(_rgb().convert("CMYK"), "TIFF"))
    assert li.original_mode == "CMYK" and any("CMYK" in n for n in li.notes)


@pytest.mark.parametrize("orientation,size", [(1, (12, 8)), (3, (12, 8)), (6, (8, 12)), (8, (8, 12))])
def test_exif_orientation(orientation, size):
    exif = Image.Exif()
    exif[0x0112] = orientation
    li = load_image(_bytes(_rgb(), "JPEG", exif=exif.tobytes()))
    assert (li.width, li.height) == size
    assert bool([n for n in li.notes if "orientation" in n]) == (orientation != 1)
    e = Image.Exif()
    e.load(li.metadata.exif)
    assert e.get(0x0112, 1) == 1


def test_metadata_is_collected():
    exif = Image.Exif()
    exif[0x010F] = "Cam"
    li = load_image(_bytes(_rgb(), "JPEG", exif=exif.tobytes(), icc_profile=b"icc-bytes", xmp=b"<xmp/>"))
    assert li.metadata.icc_profile == b"icc-bytes" and li.metadata.xmp == b"<xmp/>"
    assert b"Cam" in li.metadata.exif


def test_multi_frame_uses_the_first_with_a_note():
    frames = [_rgb(), _rgb().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    li = load_image(buf.getvalue())
    assert any("multi-frame" in n for n in li.notes)


@pytest.mark.parametrize("limit", [64, 40])  # 96 px: over the limit (Pillow warns), over twice it (errors)
def test_bombs_are_refused(limit):
    with pytest.raises(InputError, match="bomb"):
        load_image(_bytes(_rgb(12, 8)), max_pixels=limit)
    assert load_image(_bytes(_rgb(12, 8)), max_pixels=96).width == 12


def test_damage_and_non_images(tmp_path):
    data = _bytes(_rgb(64, 64))
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])
    with pytest.raises(InputError, match="not an image"):
        load_image(b"just some text")
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="directory"):
        load_image(tmp_path)


def test_cmyk_profile_is_applied_and_not_carried_onto_rgb():
    from PIL import ImageCms

    cmyk = _rgb().convert("CMYK")
    bogus = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # not a CMYK profile
    li = load_image(_bytes(cmyk, "JPEG", icc_profile=bogus))
    assert li.rgb.mode == "RGB" and li.metadata.icc_profile is None
    assert any("ICC" in n for n in li.notes)
