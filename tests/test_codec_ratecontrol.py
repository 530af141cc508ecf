"""Rate control and the timestep choice, on their own (fake rate curves and decoders)."""

import numpy as np
import pytest
from PIL import Image

from archiver.codecs.diffusion import ratecontrol as rc


def test_quality_and_s_are_inverse_and_float32_exact():
    for q in (0.0, 12.5, 50.0, 77.0, 100.0):
        s = rc.quality_to_s(q)
        assert s == float(np.float32(s))
        assert abs(rc.s_to_quality(s) - q) < 1e-4
    assert rc.quality_to_s(50.0) == 1.0


@pytest.mark.parametrize("target", [0.05, 0.3, 1.7])
def test_rate_control_lands_within_its_tolerance_on_the_real_rate(target):
    calls = []

    def bpp_at(q):
        calls.append(q)
        return 0.02 * 2 ** (q / 15)  # rate grows with quality

    q, note = rc.rate_control(bpp_at, target)
    assert note is None
    assert abs(bpp_at(q) - target) / target <= rc.RATE_TOLERANCE
    assert len(calls) < 30


def test_unreachable_targets_give_the_end_of_the_range_and_say_why():
    q, note = rc.rate_control(lambda q: 0.5 + q / 100, 0.1)
    assert q == rc.QUALITY_MIN and "below the lowest rate" in note
    q, note = rc.rate_control(lambda q: 0.5 + q / 100, 9.0)
    assert q == rc.QUALITY_MAX and "above the highest rate" in note


def test_a_jumpy_rate_curve_is_reported():
    q, note = rc.rate_control(lambda q: 0.1 if q < 50 else 1.0, 0.4)
    assert note and "off the target" in note


def test_timestep_is_the_snr_match_scaled():
    assert rc.choose_timestep(100) == 100 and rc.choose_timestep(100, 0.25) == 25


def test_search_keeps_the_candidate_closest_to_the_original():
    original = Image.new("RGB", (16, 16), (120, 90, 60))
    rng = np.random.default_rng(0)

    def decode_at(t):  # noise shrinks towards t = 60, grows away from it
        noise = rng.normal(0, 1 + abs(t - 60) / 3, (16, 16, 3))
        return Image.fromarray(np.clip(np.asarray(original) + noise, 0, 255).astype(np.uint8))

    t, tried = rc.search_timestep(decode_at, original, 60, 999)
    assert t == 60 and {r["t"] for r in tried} == {0, 30, 45, 60, 75, 90}
