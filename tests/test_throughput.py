"""Issue 27: throughput. The same results for less work: MS-SSIM without torch (the value of
pytorch_msssim), each reconstruction scored once per source, and ``best`` ranking its candidates
on the verdict their own search reached instead of decoding and scoring them again."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from archiver import metrics
from archiver.codecs import Source, Target, get_codec
from archiver.codecs import base
from archiver.codecs.choice import Choice
from archiver.imageio import load_image
from archiver.testing.catalog import photo_bytes


def _pair(size, quality):
    img = Image.open(io.BytesIO(photo_bytes(5))).convert("RGB").resize(size)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return img, Image.open(buf).convert("RGB")


@pytest.mark.parametrize("size", [(320, 200), (321, 199), (161, 170), (200, 100), (40, 11), (12, 9)])
@pytest.mark.parametrize("quality", [5, 50, 95])
def test_ms_ssim_is_pytorch_msssims_value(size, quality):
    """Every path (5 scales with odd sides, single-scale SSIM under 161 px, the tiny fallback)."""
    torch = pytest.importorskip("torch")
    from pytorch_msssim import ms_ssim as ref_ms, ssim as ref_ss

    a, b = _pair(size, quality)
    x = torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float()
    y = torch.from_numpy(np.array(b)).permute(2, 0, 1)[None].float()
    if min(size) > 160:
        want = float(ref_ms(x, y, data_range=255.0))
    elif min(size) >= 11:
        want = float(ref_ss(x, y, data_range=255.0))
    else:
        want = 1.0 - float(torch.mean(torch.abs(x - y)) / 255.0)
    assert metrics.ms_ssim(a, b) == pytest.approx(want, abs=2e-5)


def test_ms_ssim_does_not_import_torch():
    import subprocess

    code = ("import sys, numpy as np; from archiver import metrics; a = np.zeros((200, 200, 3), np.uint8); "
            "metrics.ms_ssim(a, a + 1); print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def _counting(monkeypatch):
    """Counts of SSIMULACRA2 scores and MS-SSIMs computed from now on."""
    n = {"score": 0, "ms_ssim": 0}
    real_scores, real_ms = base._scores, metrics.ms_ssim

    def scores(*a, **k):
        n["score"] += 1
        return real_scores(*a, **k)

    def ms(*a, **k):
        n["ms_ssim"] += 1
        return real_ms(*a, **k)

    monkeypatch.setattr(base, "_scores", scores)
    monkeypatch.setattr(metrics, "ms_ssim", ms)
    return n


def test_the_same_pixels_are_scored_once_per_source(monkeypatch):
    n = _counting(monkeypatch)
    data = photo_bytes(6)
    src = Source(load_image(data), data)
    recon = src.image.rgb.filter(ImageFilter.GaussianBlur(1.2))
    first = base.measure(src, recon)
    again = base.measure(src, recon.copy())
    assert n == {"score": 1, "ms_ssim": 1}
    assert (first.score, first.psnr, first.ms_ssim) == (again.score, again.psnr, again.ms_ssim)
    other = base.measure(src, recon.filter(ImageFilter.GaussianBlur(1.0)))  # other pixels: measured
    assert n == {"score": 2, "ms_ssim": 2} and other.score < first.score
    fresh = Source(load_image(data), data)  # another source: nothing carried over
    assert base.measure(fresh, recon).score == first.score and n["score"] == 3


def test_best_ranks_on_the_searchs_verdict_without_decoding_again(monkeypatch):
    """`best` among AVIF and JPEG XL: each candidate's bytes were decoded and judged by its own
    search; the ranking takes that verdict (same ok, score, PSNR) instead of a second decode."""
    data = photo_bytes(7)
    params = {"among": ["avif", "jxl"], "target": 70.0}
    decodes = {"search": 0, "elsewhere": 0}
    searching = {"now": False}
    for name in ("avif", "jxl"):
        cls = type(get_codec(name))
        real_decode, real_encode = cls.decode, cls.encode

        def counted(self, d, _real=real_decode):
            decodes["search" if searching["now"] else "elsewhere"] += 1
            return _real(self, d)

        def search(self, *args, _real=real_encode, **kwargs):
            searching["now"] = True
            try:
                return _real(self, *args, **kwargs)
            finally:
                searching["now"] = False

        monkeypatch.setattr(cls, "decode", counted)
        monkeypatch.setattr(cls, "encode", search)
    choice = Choice("best", params)
    ranked = list(choice.candidates(Source(load_image(data), data)))
    assert ranked and all(a.ok for a in choice.ranking)
    # every decode happened inside a codec's own search (its probes), none for the ranking
    assert decodes["elsewhere"] == 0 and decodes["search"] >= sum(
        1 for _, e in ranked for p in e.params["probes"] if "score" in p) > 0
    for (codec, enc), att in zip(ranked, choice.ranking):
        v = codec.verify(enc.data, Source(load_image(data), data), Target(floor={"min_ssimulacra2": 70.0}))
        assert v.ok and att.score == v.score and att.psnr == pytest.approx(v.psnr)
    # with a budget the ranking needs MS-SSIM, which a search does not measure: it verifies
    decodes["n"] = 0
    budget = Choice("best", {"among": ["avif", "jxl"], "budget": {"bpp": 2.0}})
    list(budget.candidates(Source(load_image(data), data)))
    assert all(a.ms_ssim is not None for a in budget.ranking)


def test_last_fitting_gives_last_trues_answer_in_fewer_probes():
    """The diffusion codec's size cap: on any non-decreasing sizes the same knob as the plain
    bisection (``last_true``), and on sizes that grow like a codec's (log-linear) about half the
    encodes."""
    import math
    import random

    from archiver.codecs.conventional import last_fitting, last_true

    rng = random.Random(27)
    for _ in range(2000):
        hi = rng.randint(0, 100)
        sizes, c = [], rng.randint(1, 100)
        for _ in range(hi + 1):
            c += rng.choice([0, 0, 1, 5, 50, 500])
            sizes.append(c)
        limit = rng.randint(0, sizes[-1] + 100)
        got = last_fitting(lambda q: sizes[q], limit, 0, hi, guess=rng.randint(0, hi))
        assert got == last_true(lambda q: sizes[q] <= limit, 0, hi)
    smooth = [int(400 * math.exp(0.06 * q)) for q in range(101)]
    plain = fast = 0
    for limit in (1000, 3000, 8000, 15000, 40000, 120000):
        seen_plain, seen_fast = set(), set()
        want = last_true(lambda q: (seen_plain.add(q), smooth[q])[1] <= limit, 0, 100)
        assert last_fitting(lambda q: (seen_fast.add(q), smooth[q])[1], limit, 0, 100, guess=63) == want
        plain, fast = plain + len(seen_plain), fast + len(seen_fast)
    assert fast <= plain * 0.6, (fast, plain)
