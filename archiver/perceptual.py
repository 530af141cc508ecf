"""Perceptual quality scores: SSIMULACRA2 (our vectorised implementation) and butteraugli
(libjxl's ``butteraugli_main`` when it is installed).

SSIMULACRA2 (Jon Sneyers, libjxl ``tools/ssimulacra2.cc``, version 2.1 of April 2023) maps a
pair of images to a score of at most 100: 100 = identical, 90 ~ visually lossless, 70 ~ high
quality, 50 ~ medium, 30 ~ low, and it can go below 0. What is computed, as in libjxl 0.11:

- 8-bit sRGB -> linear RGB (the exact sRGB curve) -> XYB (libjxl's opsin absorbance matrix and
  cube root), rescaled to about 0..1 with B replaced by B-Y ("MakePositiveXYB");
- at each of 6 scales (1:1 .. 1:32; each scale is a 2x2 box average of the previous one *in
  linear RGB*, an odd last row/column averaged with itself): blurred means and (co)variances
  with libjxl's recursive Gaussian (sigma 1.5), which is exactly a 9-tap separable FIR with
  zeros outside the image (built here from the same formulas, applied with OpenCV); then per
  channel the 1- and 4-norms of the SSIM error map (1 - SSIM without the luminance
  denominator), of the "ringing" map and of the "blurring" map;
- a fixed weighted sum of those 108 norms, mapped to the score by libjxl's polynomial and power.
  A scale is computed while the previous one is at least 8 pixels on both sides (libjxl's test),
  so images under 113 px on a side use fewer than 6 scales.

Where this differs from the PyPI package ``ssimulacra2`` (kept as the reference in the tests): the
package blurs with scipy's true Gaussian (11 taps) with zero padding along one axis and
reflection along the other (libjxl: zeros on all sides), stops one scale earlier than libjxl on
images under 225 px on a side (it tests the new scale's size), works in float64, and drops
alpha. We follow libjxl in all four (float32 like libjxl); agreement with both is measured
in ``bench/perceptual_calibration.py`` and reported in docs/benchmarks.md.

Where this differs from libjxl's tool: libjxl runs the blur as a float32 recursion whose rounding
error (rms ~1e-6, growing with the row and column length) leaks into the variance terms; near
the top of the scale, where the SSIM terms are tiny, that lowers its scores. Ours is the exact
filter. Measured: within 0.05 of the tool on most pairs at the metric's tuning sizes (~0.2 MP);
near-flat channels up to 0.3; on 1-4 MP photos at high quality (85-95) ours reads 0.2-3.7
higher. Substituting libjxl's own blur into this pipeline reproduces the tool within 0.1.

Inputs: PIL images or uint8 arrays (HxW, HxWx1 gray; HxWx2 gray+alpha; HxWx3 RGB; HxWx4 RGBA),
reference and distorted of the same size. Values are taken as sRGB; an embedded ICC profile is
ignored (convert first: libjxl's tool would colour-manage it, and 286 of the 1591 train/ images
carry one). Gray is replicated to RGB. Alpha follows libjxl's tool: an image with
alpha is blended (in sRGB-encoded values) on a grey background; when the *reference* has alpha
the score is the worse of a dark (0.1) and a light (0.9) background, otherwise a distorted image
with alpha is blended on 0.5. Images under 8 pixels on either side raise ``ValueError`` (libjxl's
tool refuses them too: "Minimum image size is 8x8 pixels").
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

try:  # the reference implementation; only its version is needed here
    from ssimulacra2 import __version__ as _PKG_VERSION
except ImportError:  # pragma: no cover - it is a declared dependency
    _PKG_VERSION = "absent"

__all__ = [
    "METRIC",
    "MIN_SIZE",
    "SIX_SCALES",
    "Ssimulacra2Reference",
    "butteraugli",
    "butteraugli_binary",
    "ssimulacra2",
]

#: Our implementation's revision: bump it whenever a change can move a score.
_IMPL = "1"
#: Recorded with every score: the PyPI package we are tested against, plus our revision.
METRIC = {"name": "ssimulacra2", "version": f"{_PKG_VERSION}+archiver-{_IMPL}"}
#: Smallest side (pixels) that can be scored.
MIN_SIZE = 8
#: Smallest side that gets all 6 scales (the 1:16 scale must be at least 8 pixels).
SIX_SCALES = 113

_NUM_SCALES = 6
_C2 = np.float32(0.0009)

# libjxl lib/jxl/cms/opsin_params.h
_M = np.array(
    [
        [0.30, 1.0 - 0.078 - 0.30, 0.078],
        [0.23, 1.0 - 0.078 - 0.23, 0.078],
        [0.24342268924547819, 0.20476744424496821, 1.0 - 0.24342268924547819 - 0.20476744424496821],
    ],
    dtype=np.float32,
)
_BIAS = np.float32(0.0037930732552754493)
_CBRT_BIAS = np.float32(np.cbrt(np.float64(_BIAS)))

# libjxl tools/ssimulacra2.cc, Msssim::Score (the same 108 numbers as the PyPI package; a test
# checks that)
_WEIGHTS = np.array([
    0.0, 0.0007376606707406586, 0.0, 0.0, 0.0007793481682867309, 0.0, 0.0,
    0.0004371155730107379, 0.0, 1.1041726426657346, 0.00066284834129271,
    0.00015231632783718752, 0.0, 0.0016406437456599754, 0.0, 1.8422455520539298,
    11.441172603757666, 0.0, 0.0007989109436015163, 0.000176816438078653, 0.0,
    1.8787594979546387, 10.94906990605142, 0.0, 0.0007289346991508072, 0.9677937080626833, 0.0,
    0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053, 0.0004550992113792063,
    0.0, 0.0, 0.0013648766163243398, 0.0, 0.0, 0.0, 0.0, 0.0, 7.466890328078848, 0.0,
    17.445833984131262, 0.0006235601634041466, 0.0, 0.0, 6.683678146179332,
    0.00037724407979611296, 1.027889937768264, 225.20515300849274, 0.0, 0.0, 19.213238186143016,
    0.0011401524586618361, 0.001237755635509985, 176.39317598450694, 0.0, 0.0, 24.43300999870476,
    0.28520802612117757, 0.0004485436923833408, 0.0, 0.0, 0.0, 34.77906344483772,
    44.835625328877896, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0008680556573291698, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0005313191874358747, 0.0, 0.00016533814161379112, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0004179171803251336, 0.0017290828234722833, 0.0, 0.0020827005846636437, 0.0, 0.0,
    8.826982764996862, 23.19243343998926, 0.0, 95.1080498811086, 0.9863978034400682,
    0.9834382792465353, 0.0012286405048278493, 171.2667255897307, 0.9807858872435379, 0.0, 0.0,
    0.0, 0.0005130064588990679, 0.0, 0.00010854057858411537,
], dtype=np.float64)


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


_LUT = _srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)


def _gauss_kernel(sigma: float = 1.5) -> np.ndarray:
    """The impulse response of libjxl's ``CreateRecursiveGaussian(sigma)`` + ``FastGaussian1D``
    (Charalampidis 2016, three cosine terms). The recursion's response to an impulse is exactly
    ``sum_k n2_k sin((N - |d|) w_k) / sin(w_k)`` for ``|d| < N`` and 0 beyond: an FIR filter with
    2N-1 taps (9 for sigma 1.5), zero outside the image like libjxl's."""
    radius = round(3.2795 * sigma + 0.2546)
    omega = np.array([1.0, 3.0, 5.0]) * math.pi / (2.0 * radius)
    p = np.array([1 / math.tan(0.5 * omega[0]), -1 / math.tan(0.5 * omega[1]), 1 / math.tan(0.5 * omega[2])])
    r = np.array([p[0] ** 2 / math.sin(omega[0]), -p[1] ** 2 / math.sin(omega[1]), p[2] ** 2 / math.sin(omega[2])])
    rho = np.exp(-0.5 * sigma * sigma * omega**2) / radius
    d13 = p[0] * r[1] - r[0] * p[1]
    zeta15 = (p[1] * r[2] - r[1] * p[2]) / d13
    zeta35 = (p[2] * r[0] - r[2] * p[0]) / d13
    a = np.array([p, r, [zeta15, zeta35, 1.0]])
    gamma = np.array([1.0, radius * radius - sigma * sigma, zeta15 * rho[0] + zeta35 * rho[1] + rho[2]])
    beta = np.linalg.solve(a, gamma)
    n2 = -beta * np.cos(omega * (radius + 1.0))
    d = np.arange(-(radius - 1), radius)
    k = (n2[:, None] * np.sin((radius - np.abs(d))[None, :] * omega[:, None]) / np.sin(omega)[:, None]).sum(0)
    return k.astype(np.float32)


_KERNEL = _gauss_kernel()


def _blur(x: np.ndarray) -> np.ndarray:
    """Separable 9-tap blur of an HxWxC float32 image, zeros outside (libjxl's FastGaussian)."""
    return cv2.sepFilter2D(x, cv2.CV_32F, _KERNEL, _KERNEL, borderType=cv2.BORDER_CONSTANT)


# linear RGB -> opsin absorbance + bias (one affine transform per pixel)
_OPSIN = np.concatenate([_M, np.full((3, 1), _BIAS, np.float32)], axis=1)
# cube-rooted mixed (m0, m1, m2) -> MakePositiveXYB(X, Y, B): X = 0.5 (m0 - m1), Y = 0.5 (m0 + m1),
# B = m2 (each m less cbrt(bias)); then B' = B - Y + 0.55, X' = 14 X + 0.42, Y' = Y + 0.01
_POSITIVE_XYB = np.array(
    [
        [7.0, -7.0, 0.0, 0.42],
        [0.5, 0.5, 0.0, 0.01 - float(_CBRT_BIAS)],
        [-0.5, -0.5, 1.0, 0.55],
    ],
    dtype=np.float32,
)


def _to_xyb(lin: np.ndarray) -> np.ndarray:
    """Linear RGB (HxWx3 float32) -> libjxl XYB, then MakePositiveXYB."""
    mixed = cv2.transform(lin, _OPSIN)
    np.maximum(mixed, 0.0, out=mixed)
    np.cbrt(mixed, out=mixed)
    return cv2.transform(mixed, _POSITIVE_XYB)


def _downsample(lin: np.ndarray) -> np.ndarray:
    """2x2 box average in linear RGB; an odd last row/column is averaged with itself (libjxl)."""
    h, w, _ = lin.shape
    if h % 2 or w % 2:
        lin = np.pad(lin, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    h2, w2 = lin.shape[0] // 2, lin.shape[1] // 2
    s = lin.reshape(h2, 2, w2, 2, 3)
    return ((s[:, 0, :, 0] + s[:, 0, :, 1]) + (s[:, 1, :, 0] + s[:, 1, :, 1])) * np.float32(0.25)


def _sums(m: np.ndarray) -> np.ndarray:
    """Per-channel sums of an HxWx3 float32 map, accumulated in float64 (OpenCV)."""
    return np.array(cv2.sumElems(m)[:3])


def _norms(m: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel 1-norm (mean) and 4-norm (4th root of the mean 4th power) of an HxWx3 map
    of ``n`` pixels; ``m`` is overwritten."""
    s1 = _sums(m)
    np.multiply(m, m, out=m)
    np.multiply(m, m, out=m)
    return s1 / n, np.sqrt(np.sqrt(_sums(m) / n))


def _score(scales: list[np.ndarray]) -> float:
    """libjxl's Msssim::Score. Each entry: the 18 norms of one scale in libjxl's order, as a
    (3 channels, 2 norms, 3 maps: ssim, ringing, blurring) array. The weight index runs on over
    scales and channels, so with fewer scales later channels use earlier weights, as in libjxl."""
    if not scales:
        return 100.0
    v = np.abs(np.stack(scales, axis=1))  # (3, n_scales, 2, 3)
    total = float(np.dot(_WEIGHTS[: v.size], v.ravel()))
    total *= 0.9562382616834844
    total = 2.326765642916932 * total - 0.020884521182843837 * total**2 + 6.248496625763138e-05 * total**3
    if total > 0:
        return 100.0 - 10.0 * total**0.6276336467831387
    return 100.0


# --- inputs ----------------------------------------------------------------------------------

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_8BIT_MODES = {"1", "L", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV"} | _ALPHA_MODES


def _as_rgb_alpha(img) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (HxWx3 uint8 RGB, HxW float64 alpha in 0..1 or None)."""
    if isinstance(img, Image.Image):
        if img.mode not in _8BIT_MODES:
            raise ValueError(f"not an 8-bit image: PIL mode {img.mode!r}")
        has_alpha = img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)
        a = np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    else:
        a = np.asarray(img)
        if a.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array, got {a.dtype}")
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"expected HxW, HxWx1, HxWx2, HxWx3 or HxWx4, got shape {a.shape}")
        if a.shape[2] in (1, 2):  # gray (+ alpha): replicate to RGB
            a = np.concatenate([a[..., :1]] * 3 + [a[..., 1:]], axis=2)
    rgb = np.ascontiguousarray(a[..., :3])
    alpha = a[..., 3] / 255.0 if a.shape[2] == 4 else None
    return rgb, alpha


def _linear(rgb: np.ndarray, alpha: np.ndarray | None, bg: float) -> np.ndarray:
    """uint8 sRGB (+ alpha blended on ``bg`` in sRGB-encoded values, as libjxl) -> linear float32."""
    if alpha is None:
        return cv2.LUT(rgb, _LUT)
    a = alpha[..., None]
    v = a * (rgb / 255.0) + (1.0 - a) * bg
    return _srgb_to_linear(v).astype(np.float32)


def _box_shrink(lin: np.ndarray, factor: int) -> np.ndarray:
    while factor > 1:
        lin = _downsample(lin)
        factor //= 2
    return lin


@dataclass
class _RefScale:
    img: np.ndarray  # XYB
    mu: np.ndarray  # blurred XYB
    var: np.ndarray  # blur(img^2) - mu^2
    edge: np.ndarray  # 1 + |img - mu|


class _Pyramid:
    """The reference's per-scale XYB and blurred statistics (they do not depend on the
    distorted image)."""

    def __init__(self, lin: np.ndarray):
        self.scales: list[_RefScale] = []
        cur = lin
        for scale in range(_NUM_SCALES):
            if scale:
                if cur.shape[0] < MIN_SIZE or cur.shape[1] < MIN_SIZE:  # libjxl tests the previous scale
                    break
                cur = _downsample(cur)
            x = _to_xyb(cur)
            mu = _blur(x)
            var = _blur(x * x)
            var -= mu * mu
            edge = np.abs(x - mu)
            edge += np.float32(1.0)
            self.scales.append(_RefScale(x, mu, var, edge))


def _compare(ref: _Pyramid, lin2: np.ndarray) -> float:
    norms = []
    cur = lin2
    one = np.float32(1.0)
    for i, r in enumerate(ref.scales):
        if i:
            cur = _downsample(cur)
        n = cur.shape[0] * cur.shape[1]
        x2 = _to_xyb(cur)
        t = np.multiply(x2, x2)
        s22 = _blur(t)
        np.multiply(r.img, x2, out=t)
        s12 = _blur(t)
        mu2 = _blur(x2)
        # SSIM' error map (libjxl SSIMMap): d = max(0, 1 - num_m * num_s / den_s)
        np.multiply(mu2, mu2, out=t)
        s22 -= t
        np.add(r.var, s22, out=s22)
        s22 += _C2  # den_s = (s11 - mu1^2) + (s22 - mu2^2) + C2 (this order: identical -> 100)
        np.multiply(r.mu, mu2, out=t)
        s12 -= t
        s12 *= np.float32(2.0)
        s12 += _C2  # num_s = 2 (s12 - mu1 mu2) + C2
        np.subtract(r.mu, mu2, out=t)
        np.multiply(t, t, out=t)
        np.subtract(one, t, out=t)  # num_m = 1 - (mu1 - mu2)^2
        t *= s12
        t /= s22
        np.subtract(one, t, out=t)
        np.maximum(t, 0.0, out=t)
        ssim1, ssim4 = _norms(t, n)
        # edge maps (libjxl EdgeDiffMap): d1 = (1 + |x2 - mu2|) / (1 + |x1 - mu1|) - 1
        d1 = mu2
        np.subtract(x2, mu2, out=d1)
        np.abs(d1, out=d1)
        d1 += one
        d1 /= r.edge
        d1 -= one
        np.maximum(d1, 0.0, out=t)  # ringing: distorted has edges where the original is smooth
        np.subtract(t, d1, out=s12)  # blurring: max(-d1, 0), the original's edges smoothed away
        ring1, ring4 = _norms(t, n)
        blur1, blur4 = _norms(s12, n)
        per = np.empty((3, 2, 3))
        per[:, 0] = np.stack([ssim1, ring1, blur1], axis=1)
        per[:, 1] = np.stack([ssim4, ring4, blur4], axis=1)
        norms.append(per)
    return _score(norms)


def _check_size(shape: tuple[int, ...]) -> None:
    if shape[0] < MIN_SIZE or shape[1] < MIN_SIZE:
        raise ValueError(
            f"SSIMULACRA2 needs at least {MIN_SIZE}x{MIN_SIZE} pixels, got {shape[1]}x{shape[0]}"
        )


class Ssimulacra2Reference:
    """A reference image prepared once, to score many distorted versions of it (a codec
    search): ``Ssimulacra2Reference(img).score(candidate)`` equals ``ssimulacra2(img,
    candidate)`` and skips the reference's share of the work (about a third).

    ``downscale`` (1, 2 or 4): score both images box-averaged in linear light by that factor
    first, a cheap *estimate* of the full score (about 1/4 or 1/16 of the work), *not* the score:
    it reads about 20 points higher on average and is no basis for accepting a candidate (see
    docs/benchmarks.md). Where the reduced image would have fewer than 6 scales (a side under
    ``SIX_SCALES``), it is scored at full size (``self.downscale`` says which was used)."""

    def __init__(self, reference, *, downscale: int = 1):
        if downscale not in (1, 2, 4):
            raise ValueError(f"downscale must be 1, 2 or 4, got {downscale}")
        rgb, alpha = _as_rgb_alpha(reference)
        _check_size(rgb.shape)
        if -(-min(rgb.shape[:2]) // downscale) < SIX_SCALES:  # fewer scales: a worse estimate
            downscale = 1
        self.downscale = downscale
        self.shape = rgb.shape[:2]
        self._has_alpha = alpha is not None
        # libjxl: with an alpha reference, the worse of dark and light backgrounds
        bgs = (0.1, 0.9) if self._has_alpha else (0.5,)
        self._pyramids = {bg: _Pyramid(_box_shrink(_linear(rgb, alpha, bg), downscale)) for bg in bgs}

    def score(self, distorted) -> float:
        """SSIMULACRA2 of ``distorted`` against the prepared reference (<= 100)."""
        rgb, alpha = _as_rgb_alpha(distorted)
        if rgb.shape[:2] != self.shape:
            raise ValueError(f"size mismatch {self.shape[1]}x{self.shape[0]} vs {rgb.shape[1]}x{rgb.shape[0]}")
        scores = []
        for bg, pyr in self._pyramids.items():
            lin = _box_shrink(_linear(rgb, alpha, bg), self.downscale)
            scores.append(_compare(pyr, lin))
        return min(scores)


def ssimulacra2(reference, distorted, *, downscale: int = 1) -> float:
    """SSIMULACRA2 score (<= 100; 100 = identical) of ``distorted`` against ``reference``:
    8-bit PIL images or uint8 arrays of the same size, at least 8x8 (see the module docstring
    for modes and alpha). ``ValueError`` on a size mismatch, a too-small or a non-8-bit image.
    ``downscale=2`` (or 4) is a cheap estimate, not the score: see :class:`Ssimulacra2Reference`.
    To score several candidates against one reference, use :class:`Ssimulacra2Reference`."""
    return Ssimulacra2Reference(reference, downscale=downscale).score(distorted)


#: the named quality levels a policy's ``target`` may use (SSIMULACRA2 scores); docs/policies.md
#: shows what each looks like
TARGET_LEVELS = {"visually-lossless": 90.0, "high": 80.0, "good": 70.0, "medium": 50.0, "low": 30.0}


def target_score(value) -> float:
    """A policy's ``target``: a level name or a score in (0, 100]; ``ValueError`` otherwise."""
    if isinstance(value, str):
        if value in TARGET_LEVELS:
            return TARGET_LEVELS[value]
        raise ValueError(f"unknown target {value!r}; known: {', '.join(f'{k} ({v:g})' for k, v in TARGET_LEVELS.items())}"
                         " or a SSIMULACRA2 score")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
        raise ValueError(f"a target is a level name or a SSIMULACRA2 score in (0, 100], got {value!r}")
    return float(value)


# --- butteraugli -----------------------------------------------------------------------------

def butteraugli_binary() -> str | None:
    """Path of libjxl's ``butteraugli_main``: ``$ARCHIVER_BUTTERAUGLI`` or the one on PATH
    (Debian: ``apt-get install libjxl-devtools``); None when neither exists."""
    env = os.environ.get("ARCHIVER_BUTTERAUGLI")
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which("butteraugli_main")


def butteraugli(reference, distorted, *, norm: str = "max", timeout: float = 120.0) -> float | None:
    """Butteraugli distance (0 = identical; ~1 = just noticeable; lower is better) computed by
    libjxl's ``butteraugli_main`` (its defaults: 80-nit display), or None when the tool is not
    installed. ``norm="max"`` is the max-norm distance the tool prints first (the number
    libjxl's ``--distance`` targets); ``norm="3"`` its "3-norm" line (a 3-norm over the
    distance map, steadier). Same inputs as :func:`ssimulacra2`; alpha is dropped.
    ``RuntimeError`` if the tool fails."""
    if norm not in ("max", "3"):
        raise ValueError(f"norm must be 'max' or '3', got {norm!r}")
    exe = butteraugli_binary()
    if exe is None:
        return None
    a, _ = _as_rgb_alpha(reference)
    b, _ = _as_rgb_alpha(distorted)
    if a.shape != b.shape:
        raise ValueError(f"size mismatch {a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}")
    with tempfile.TemporaryDirectory(prefix="butteraugli-") as tmp:
        pa, pb = os.path.join(tmp, "ref.png"), os.path.join(tmp, "dist.png")
        Image.fromarray(a).save(pa, compress_level=1)
        Image.fromarray(b).save(pb, compress_level=1)
        res = subprocess.run([exe, pa, pb], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{exe} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return _parse_butteraugli(res.stdout, norm)


def _parse_butteraugli(out: str, norm: str) -> float:
    """``butteraugli_main`` prints the max-norm distance alone on the first line, then
    ``3-norm: X``."""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    try:
        if norm == "max":
            return float(lines[0])
        return float(next(ln for ln in lines if ln.startswith("3-norm:")).split(":", 1)[1])
    except (IndexError, StopIteration, ValueError):
        raise RuntimeError(f"unexpected butteraugli_main output: {out[-500:]!r}") from None
