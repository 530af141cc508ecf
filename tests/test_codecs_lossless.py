"""The lossless codec behind the Codec interface: bytes back for JPEG, pixels back for the rest."""

import io

import numpy as np
import pytest
from PIL import Image

from archiver.codecs import CodecRefused, Recorded, Source, Target, get_codec
from archiver.errors import ArchiverError
from archiver.imageio import load_image


def _img(fmt, **kw):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:80]
    a = np.stack([xx * 3, yy * 4, (xx + yy) % 255], -1).astype(np.uint8) + rng.integers(0, 3, (64, 80, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt, **kw)
    return buf.getvalue()


def _src(data):
    return Source(load_image(data), data)


def test_jpeg_comes_back_byte_for_byte():
    codec = get_codec("lossless")
    data = _img("JPEG", quality=90)
    enc = codec.encode(_src(data), Target())
    assert enc.ext == ".jxl" and enc.size < len(data)
    v = codec.verify(enc.data, _src(data), Target())
    assert v.ok and v.exact == "bytes"
    back = codec.restore(enc.data, Recorded(sha256=v.reconstruction_sha256, path="a.jpg"))
    assert back.data == data and back.exact == "bytes"


def test_png_comes_back_with_the_same_pixels():
    codec = get_codec("lossless")
    data = _img("PNG", compress_level=0)
    enc = codec.encode(_src(data), Target())
    v = codec.verify(enc.data, _src(data), Target())
    assert v.ok and v.exact in ("bytes", "pixels")
    back = codec.restore(enc.data, Recorded(sha256="0" * 64, reconstruction_sha256=v.reconstruction_sha256, path="a.png"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(back.data))), np.asarray(Image.open(io.BytesIO(data))))
    assert np.array_equal(np.asarray(codec.decode(enc.data)), np.asarray(Image.open(io.BytesIO(data))))
    with pytest.raises(ArchiverError, match="does not match"):
        codec.restore(enc.data, Recorded(sha256="0" * 64, reconstruction_sha256="1" * 64, path="a.png"))


def test_a_file_it_cannot_shrink_is_not_a_candidate():
    from archiver.codecs.choice import Choice

    small = io.BytesIO()
    Image.new("L", (4, 4)).save(small, "PNG", optimize=True)
    c = Choice("lossless", {})
    assert list(c.candidates(_src(small.getvalue()))) == []
    assert "output not smaller" in c.attempts[0].why
    assert c.why_chosen(None).startswith("original kept: lossless: output not smaller")


def test_what_it_cannot_code_exactly_is_refused():
    codec = get_codec("lossless")
    buf = io.BytesIO()
    Image.new("CMYK", (32, 32), (1, 2, 3, 4)).save(buf, "TIFF")
    with pytest.raises(CodecRefused, match="not possible"):
        codec.encode(_src(buf.getvalue()), Target())


def test_a_different_original_fails_verification():
    codec = get_codec("lossless")
    a, b = _img("JPEG", quality=90), _img("JPEG", quality=70)
    enc = codec.encode(_src(a), Target())
    assert not codec.verify(enc.data, _src(b), Target()).ok
    assert not codec.verify(b"garbage", _src(a), Target()).ok
