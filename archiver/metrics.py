"""Image quality measures shared by the quality guard, training evaluation and benchmarks.

All take 8-bit RGB images (PIL or HxWx3 uint8 arrays) of the same size.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def _arr(img) -> np.ndarray:
    if isinstance(img, Image.Image):
        img = np.array(img.convert("RGB"))  # a writable copy: torch.from_numpy warns on read-only views
    a = np.asarray(img)
    if not a.flags.writeable:  # torch.from_numpy warns on read-only views
        a = a.copy()
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return a


def psnr(a, b, box: tuple[int, int, int, int] | None = None) -> float:
    """PSNR in dB (inf for identical images); ``box`` = (left, top, right, bottom) restricts it."""
    x, y = _arr(a).astype(np.float64), _arr(b).astype(np.float64)
    if x.shape != y.shape:
        raise ValueError(f"size mismatch {x.shape} vs {y.shape}")
    if box is not None:
        l, t, r, btm = box
        x, y = x[t:btm, l:r], y[t:btm, l:r]
    mse = float(np.mean((x - y) ** 2)) if x.size else 0.0
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


#: MS-SSIM's scale weights and SSIM's constants (Wang et al. 2003; pytorch_msssim's defaults)
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_K1, _K2, _WIN, _SIGMA = 0.01, 0.03, 11, 1.5


def _gauss_1d() -> np.ndarray:
    c = np.arange(_WIN, dtype=np.float64) - _WIN // 2
    g = np.exp(-(c ** 2) / (2 * _SIGMA ** 2))
    return g / g.sum()


def _ssim_maps(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and contrast-structure of two HxWxC float32 arrays (a valid-mode
    separable Gaussian window, as pytorch_msssim: an axis shorter than the window is not blurred)."""
    import cv2  # heavy: OpenCV, which archiver.metrics does not load at import

    g = _gauss_1d().astype(np.float32)
    h, w = x.shape[:2]
    kx = g if w >= _WIN else np.ones(1, np.float32)
    ky = g if h >= _WIN else np.ones(1, np.float32)
    cy, cx = (len(ky) // 2, len(kx) // 2)

    def blur(a: np.ndarray) -> np.ndarray:
        out = cv2.sepFilter2D(a, cv2.CV_32F, kx, ky, borderType=cv2.BORDER_CONSTANT)
        return out[cy:h - cy, cx:w - cx]

    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mu1, mu2 = blur(x), blur(y)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = blur(x * x) - mu1_sq
    s2 = blur(y * y) - mu2_sq
    s12 = blur(x * y) - mu12
    cs_map = (2 * s12 + c2) / (s1 + s2 + c2)
    ssim_map = ((2 * mu12 + c1) / (mu1_sq + mu2_sq + c1)) * cs_map
    n = x.shape[2]  # cv2.mean: per-channel means accumulated in double
    return np.asarray(cv2.mean(ssim_map)[:n]), np.asarray(cv2.mean(cs_map)[:n])


def _pool2(a: np.ndarray) -> np.ndarray:
    """2x2 average pooling as ``torch.nn.functional.avg_pool2d(a, 2, padding=size % 2)``: an odd
    side is zero-padded by one on both ends, and the padding counts in the mean."""
    h, w = a.shape[:2]
    ph, pw = h % 2, w % 2
    if ph or pw:
        a = np.pad(a, ((ph, ph), (pw, pw), (0, 0)))
    oh, ow = (h + 2 * ph - 2) // 2 + 1, (w + 2 * pw - 2) // 2 + 1
    a = a[:2 * oh, :2 * ow]
    return (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) * np.float32(0.25)


def ms_ssim(a, b) -> float:
    """MS-SSIM (5 scales, the weights and window of pytorch_msssim, in float32 like it, with
    OpenCV's separable filter: the same value to ~1e-5, several times faster on a CPU and
    without torch); single-scale SSIM
    for images under 161 px a side, a mean absolute difference under 11 px."""
    x, y = _arr(a).astype(np.float32), _arr(b).astype(np.float32)
    if x.shape != y.shape:
        raise ValueError(f"size mismatch {x.shape} vs {y.shape}")
    side = min(x.shape[:2])
    if side > 160:
        mcs = []
        for i in range(len(MS_WEIGHTS)):
            ssim_c, cs = _ssim_maps(x, y, 255.0)
            if i < len(MS_WEIGHTS) - 1:
                mcs.append(np.maximum(cs, 0.0))
                x, y = _pool2(x), _pool2(y)
        vals = np.stack(mcs + [np.maximum(ssim_c, 0.0)])  # (level, channel)
        return float(np.prod(vals ** np.asarray(MS_WEIGHTS)[:, None], axis=0).mean())
    if side >= 11:
        return float(_ssim_maps(x, y, 255.0)[0].mean())
    return 1.0 - float(np.mean(np.abs(x - y)) / 255.0)


def radial_power_spectrum(img, bins: int = 64) -> np.ndarray:
    """Radially averaged log power spectrum of the luma, normalised frequency 0..0.5 in ``bins``."""
    a = _arr(img).astype(np.float64)
    luma = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
    luma = luma - luma.mean()
    h, w = luma.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    f = np.fft.fftshift(np.fft.fft2(luma * win))
    p = np.abs(f) ** 2
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    r = np.sqrt(fx**2 + fy**2)
    idx = np.minimum((r / 0.5 * bins).astype(int), bins)
    sums = np.bincount(idx.ravel(), weights=p.ravel(), minlength=bins + 1)[:bins]
    counts = np.bincount(idx.ravel(), minlength=bins + 1)[:bins]
    return np.log10(sums / np.maximum(counts, 1) + 1e-8)


def spectral_distance(original, reconstruction, bins: int = 64) -> float:
    """Realism statistic needing no downloaded network: RMS difference (in log10 power, i.e.
    decades) between the radially averaged power spectra. Blur lowers high-frequency power and
    raises it; invented texture of the right statistics keeps it low."""
    s0 = radial_power_spectrum(original, bins)
    s1 = radial_power_spectrum(reconstruction, bins)
    return float(np.sqrt(np.mean((s0 - s1) ** 2)))
