"""Rate control and timestep choice: the encoder's two searches.

- ``rate_control``: bisection on the quality Q (rate grows with Q) until the *real* file size
  hits the target bpp; the caller hands in a function that packs the file at a given Q.
- ``choose_timestep`` / ``search_timestep``: the diffusion start step, by SNR matching (scaled by
  the backbone's calibrated ``t_scale``) or by decoding a few candidates around it and keeping the
  best MS-SSIM (the encoder has the original; the decoder reads t from the header).

Quality Q in [0, 100] <-> quality factor s = 2 ** ((50 - Q) / 8): Q 50 = one step per latent std.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
from PIL import Image

QUALITY_MIN, QUALITY_MAX = 0.0, 100.0
#: rate control stops when the real bpp is this close to the target (the promise is 10%)
RATE_TOLERANCE = 0.03
#: the timestep search tries these multiples of the SNR-matched step (and t = 0)
SEARCH_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5)


def quality_to_s(q: float) -> float:
    """float32-exact, as the header stores it: the encoder uses exactly what the decoder reads."""
    return float(np.float32(2.0 ** ((50.0 - q) / 8.0)))


def s_to_quality(s: float) -> float:
    return 50.0 - 8.0 * math.log2(s)


def rate_control(bpp_at: Callable[[float], float], target: float) -> tuple[float, Optional[str]]:
    """The quality Q whose real file is closest to ``target`` bpp; returns (Q, note), the note
    saying why the target could not be met when it could not. ``bpp_at(Q)`` packs the real file."""
    lo, hi = QUALITY_MIN, QUALITY_MAX
    r_lo, r_hi = bpp_at(lo), bpp_at(hi)
    if target <= r_lo:
        note = None if r_lo <= target * 1.1 else (
            f"target {target:g} bpp is below the lowest rate this image allows "
            f"({r_lo:.4g} bpp at quality {lo:g}; headers and side information need that much)")
        return lo, note
    if target >= r_hi:
        note = None if r_hi >= target * 0.9 else (
            f"target {target:g} bpp is above the highest rate this codec reaches for it "
            f"({r_hi:.4g} bpp at quality {hi:g})")
        return hi, note
    best_q, best_err = lo, abs(r_lo - target) / target
    for _ in range(24):
        mid = (lo + hi) / 2
        r = bpp_at(mid)
        err = abs(r - target) / target
        if err < best_err:
            best_q, best_err = mid, err
        if err <= RATE_TOLERANCE:
            break
        if r > target:
            hi = mid
        else:
            lo = mid
    note = None
    if best_err > 0.10:
        note = (f"closest reachable rate is {best_err:.0%} off the target {target:g} bpp "
                "(the rate jumps between neighbouring quality values for this image)")
    return best_q, note


def choose_timestep(t_snr: int, t_scale: float = 1.0) -> int:
    """The SNR-matched step, scaled by the backbone's calibrated ``t_scale``."""
    return int(round(t_snr * float(t_scale)))


def search_timestep(decode_at: Callable[[int], Image.Image], original: Image.Image, t_snr: int,
                    t_max: int) -> tuple[int, list[dict]]:
    """Try a few timesteps around the SNR match and keep the best MS-SSIM against ``original``;
    ``decode_at(t)`` is the reconstruction the decoder would give starting at t."""
    from ...metrics import ms_ssim  # heavy: torch (via metrics), which codecs.diffusion.ratecontrol does not load at import

    candidates = sorted({0, *(min(t_max, max(1, round(t_snr * f))) for f in SEARCH_FACTORS)})
    results = [{"t": t, "ms_ssim": ms_ssim(original, decode_at(t))} for t in candidates]
    best = max(results, key=lambda r: (r["ms_ssim"], -abs(r["t"] - t_snr)))
    return best["t"], results
