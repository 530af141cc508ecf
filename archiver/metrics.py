"""Image quality measures shared by the quality guard, training evaluation and benchmarks.

All take 8-bit RGB images (PIL or HxWx3 uint8 arrays) of the same size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
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


def ms_ssim(a, b) -> float:
    """MS-SSIM (pytorch_msssim); falls back to single-scale SSIM for images under 161 px a side."""
    from pytorch_msssim import ms_ssim as _ms, ssim as _ss  # heavy: pytorch_msssim (torch), optional

    x = torch.from_numpy(_arr(a)).permute(2, 0, 1)[None].float()
    y = torch.from_numpy(_arr(b)).permute(2, 0, 1)[None].float()
    if min(x.shape[-2:]) > 160:
        return float(_ms(x, y, data_range=255.0, size_average=True))
    if min(x.shape[-2:]) >= 11:
        return float(_ss(x, y, data_range=255.0, size_average=True))
    return 1.0 - float(torch.mean(torch.abs(x - y)) / 255.0)


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
