"""Choice: the action, its fallback list and `best`, with fake codecs of known size and quality."""

import io

import pytest
from PIL import Image

from archiver.codecs import Codec, CodecRefused, Encoded, Exactness, Source, Target, Verdict
from archiver.codecs.choice import Choice, order
from archiver.codecs.registry import _CLASSES, _INSTANCES, register_codec
from archiver.imageio import load_image

#: name -> (size or None = refuses, ms_ssim it reaches, psnr)
FAKES = {"big-good": (900, 0.99, 40.0), "small-poor": (100, 0.80, 22.0), "mid-ok": (400, 0.95, 31.0),
         "refuses": (None, 0, 0), "crashes": (-1, 0, 0)}


@pytest.fixture(autouse=True)
def fakes():
    for name, (size, ssim, psnr) in FAKES.items():
        def encode(self, source, target, size=size, name=name):
            if size is None:
                raise CodecRefused("cannot")
            if size == -1:
                raise RuntimeError("boom")
            n = size if target.budget_bytes is None else min(size, target.budget_bytes)
            return Encoded(b"x" * n, name, 1, ".fake", n * 8 / source.pixels)

        def verify(self, data, source, target, ssim=ssim, psnr=psnr):
            v = Verdict(True, psnr=psnr, ms_ssim=ssim, exact="approx")
            for k, val in (("min_psnr", psnr), ("min_ms_ssim", ssim)):
                if k in target.floor and val < target.floor[k]:
                    v.ok, v.why = False, f"quality guard: {k} {val} below the floor"
            return v

        register_codec(name)(type(name, (Codec,), {"encode": encode, "verify": verify, "ext": ".fake",
                                                   "exactness": Exactness.APPROX}))
    yield
    for name in FAKES:
        _CLASSES.pop(name, None)
    for key in [k for k in _INSTANCES if k[0] in FAKES]:
        _INSTANCES.pop(key)


def _source():
    buf = io.BytesIO()
    Image.new("RGB", (40, 25), (1, 2, 3)).save(buf, "PNG")
    return Source(load_image(buf.getvalue()), b"y" * 10_000)


def _run(choice, fail=()):
    """What the archive flow does: take candidates in order, check each, stop at the first pass."""
    for codec, enc in choice.candidates(_source()):
        v = codec.verify(enc.data, _source(), choice.target)
        if codec.name in fail:
            v.ok, v.why = False, "the compressed file does not read back identically"
        choice.record(codec, enc, v)
        if v.ok:
            return codec.name, enc
    return None, None


FLOOR = {"min_psnr": 30.0, "min_ms_ssim": 0.9}


def test_order_is_action_then_fallbacks_and_keep_tries_nothing():
    assert order("avif", {"fallback": ["lossless"]}) == ["avif", "lossless"]
    assert order("best", {"among": ["diffusion", "avif"], "fallback": ["avif", "lossless"]}) == ["diffusion", "avif", "lossless"]
    assert order("keep", {"fallback": ["lossless"]}) == []


def test_the_first_codec_that_passes_wins_and_later_ones_never_run():
    c = Choice("small-poor", {"floor": FLOOR, "fallback": ["refuses", "crashes", "mid-ok", "big-good"]})
    name, enc = _run(c)
    assert name == "mid-ok" and enc.size == 400
    assert [a.codec for a in c.attempts] == ["small-poor", "refuses", "crashes", "mid-ok"]
    assert "boom" in c.attempts[2].why and "RuntimeError" in c.attempts[2].why
    why = c.why_chosen(name)
    assert why.startswith("mid-ok after small-poor: quality guard") and "refuses: cannot" in why


def test_a_failed_read_back_moves_on_to_the_next_codec():
    c = Choice("mid-ok", {"floor": FLOOR, "fallback": ["big-good"]})
    assert _run(c, fail={"mid-ok"})[0] == "big-good"
    assert not c.attempts[0].ok and "read back" in c.attempts[0].why


def test_when_nothing_passes_the_original_is_kept():
    c = Choice("small-poor", {"floor": FLOOR, "fallback": ["refuses"]})
    assert _run(c) == (None, None)
    assert c.why_chosen(None) == "original kept: small-poor: quality guard: min_ms_ssim 0.8 below the floor; refuses: cannot"


def test_best_keeps_the_smallest_file_that_meets_the_floor():
    c = Choice("best", {"floor": FLOOR, "among": ["big-good", "small-poor", "mid-ok", "refuses"], "fallback": ["big-good"]})
    name, enc = _run(c)
    assert name == "mid-ok"
    assert [a.codec for a in c.ranking] == ["mid-ok", "big-good"]
    assert "smallest file meeting the floor" in c.why_chosen(name) and "small-poor" in c.why_chosen(name)


def test_best_with_a_budget_keeps_the_best_quality_within_it():
    c = Choice("best", {"floor": {"min_psnr": 20.0}, "among": ["small-poor", "mid-ok", "big-good"],
                        "budget": {"bytes": 500}})
    name, enc = _run(c)
    assert name == "big-good" and enc.size == 500  # the fake fills the budget
    assert "best quality within the budget" in c.why_chosen(name)
    c = Choice("best", {"floor": {"min_psnr": 20.0}, "among": ["small-poor", "mid-ok"], "budget": {"bpp": 0.8}})
    assert c.target is None and _run(c)[0] == "mid-ok" and c.target.budget_bytes == 100


def test_best_falls_back_when_none_meets_the_floor():
    c = Choice("best", {"floor": {"min_psnr": 35.0}, "among": ["small-poor", "mid-ok"], "fallback": ["big-good"]})
    assert _run(c)[0] == "big-good"
