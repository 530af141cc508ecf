"""The codec registry and codec_for(row): names, versions, one instance per settings."""

from types import SimpleNamespace

import pytest

from archiver import codecs
from archiver.codecs import Codec, CodecSettings, Exactness, codec_for, get_codec, register_codec
from archiver.codecs.registry import _CLASSES
from archiver.errors import ArchiverError, UsageError


def test_every_codec_is_registered_with_its_declared_exactness():
    assert set(codecs.names()) >= {"diffusion", "lossless", "avif", "jxl"}
    exact = {n: codecs.codec_class(n).exactness for n in codecs.names()}
    assert exact["diffusion"] is exact["avif"] is exact["jxl"] is Exactness.APPROX
    assert exact["lossless"] is Exactness.PIXELS
    for n in codecs.names():
        cls = codecs.codec_class(n)
        assert cls.name == n and cls.version >= 1 and cls.ext.startswith(".") and cls.summary


def test_one_instance_per_name_and_settings():
    assert get_codec("avif") is get_codec("avif")
    a = get_codec("diffusion", CodecSettings(backbone="tiny", device="cpu"))
    assert a is get_codec("diffusion", CodecSettings(backbone="tiny", device="cpu"))
    assert a is not get_codec("diffusion", CodecSettings(backbone="tiny", device="cpu", decode_steps=2))
    with pytest.raises(UsageError, match="unknown codec 'webp'.*avif"):
        get_codec("webp")


def test_codec_for_reads_name_and_version_from_the_row():
    row = SimpleNamespace(path="/p/a.png", codec="avif", codec_version=1)
    assert codec_for(row).name == "avif"
    assert codec_for(SimpleNamespace(path="/p/b.png", codec="lossless", codec_version=None)).name == "lossless"
    with pytest.raises(ArchiverError, match="newer than this archiver"):
        codec_for(SimpleNamespace(path="/p/a.png", codec="avif", codec_version=99))
    with pytest.raises(ArchiverError, match="does not have"):
        codec_for(SimpleNamespace(path="/p/a.png", codec="heic", codec_version=1))
    with pytest.raises(ArchiverError, match="names no codec"):
        codec_for(SimpleNamespace(path="/p/a.png", codec=None, codec_version=None))


def test_a_name_cannot_be_taken_twice():
    @register_codec("test-dummy")
    class Dummy(Codec):
        ext = ".dummy"

    try:
        assert get_codec("test-dummy").name == "test-dummy"
        with pytest.raises(ValueError, match="already registered"):
            @register_codec("test-dummy")
            class Other(Codec):
                pass
    finally:
        _CLASSES.pop("test-dummy")


def test_importing_the_registry_loads_no_model_code():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, archiver.codecs; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
