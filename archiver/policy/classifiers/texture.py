"""Texture vs graphics: is this a texture-heavy natural photo (safe to regenerate) or a flat
graphic, screenshot or document (where invented detail is visible and wrong)?

Statistics on a ~0.25 MP working copy, each one explainable:
- ``colors``: distinct colours per pixel. Camera noise spreads photos over 0.13-0.5 of that
  (Kodak); graphics, screenshots and scanned documents use a palette (receipts: 0.001-0.07).
- ``flat_share``: share of pixels whose 3x3 neighbourhood is exactly constant; ``flat_unclipped``
  the same without blown-out white / crushed black (an over-exposed sky is flat but natural).
  Near 0 for photos; large for rendered graphics and UI.
- ``top_colors``: share of pixels in the 16 most frequent colours (reported, no vote: clipped
  skies inflate it).
- ``textured``: share of 16x16 blocks with real local variation (luma std >= 5 and mean
  |Laplacian| >= 2.5): grass, foliage, stone, water, fabric.
- ``edge_density`` (Canny edges), ``hf_energy`` (mean |Laplacian|) and ``saturation`` (mean HSV
  saturation) are reported to explain decisions; they do not vote.

``graphics_score`` = max(palette, flat_unclipped / 0.4) in 0..1 with
palette = (0.1 - colors) / 0.08 clipped (1 at <= 0.02 colours per pixel, 0 at >= 0.1; for
greyscale images (64 - grey levels used) / 48 instead);
graphics when >= 0.5. ``score`` (texture) = textured * (1 - graphics_score).
"""

from __future__ import annotations

import numpy as np

from . import ClassifierResult

WORK_PIXELS = 262_144
BLOCK = 16


def statistics(rgb: np.ndarray) -> dict:
    import cv2  # heavy: cv2, slow to import

    rgb = np.ascontiguousarray(rgb)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    n = float(h * w)

    # exactly-flat neighbourhoods: max == min over 3x3
    k = np.ones((3, 3), np.uint8)
    flat = cv2.dilate(gray, k) == cv2.erode(gray, k)
    flat_share = float(flat.mean())
    clipped = (gray >= 250) | (gray <= 5)
    flat_unclipped = float((flat & ~clipped).mean())

    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    _, counts = np.unique(packed.ravel(), return_counts=True)
    colors = min(1.0, len(counts) / n)
    top_colors = float(np.sort(counts)[-16:].sum() / n)

    lap = np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=1))
    hf_energy = float(lap.mean())
    bh, bw = h // BLOCK, w // BLOCK
    if bh and bw:
        g = gray[: bh * BLOCK, : bw * BLOCK].astype(np.float32).reshape(bh, BLOCK, bw, BLOCK)
        std = g.std(axis=(1, 3))
        lm = lap[: bh * BLOCK, : bw * BLOCK].reshape(bh, BLOCK, bw, BLOCK).mean(axis=(1, 3))
        textured = float(((std >= 5.0) & (lm >= 2.5)).mean())
    else:
        textured = 0.0
    edges = cv2.Canny(gray, 100, 200)
    edge_density = float((edges > 0).mean())
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    saturation = float(hsv[..., 1].mean() / 255.0)

    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        # greyscale: at most 256 colours whatever the content; count grey levels in use instead
        levels = int((np.bincount(gray.ravel(), minlength=256) > n * 1e-5).sum())
        palette = min(1.0, max(0.0, (64 - levels) / 48))
    else:
        palette = min(1.0, max(0.0, (0.1 - colors) / 0.08))
    graphics_score = float(min(1.0, max(palette, flat_unclipped / 0.4)))
    return {
        "flat_share": flat_share,
        "flat_unclipped": flat_unclipped,
        "top_colors": top_colors,
        "colors": colors,
        "textured": textured,
        "edge_density": edge_density,
        "hf_energy": hf_energy,
        "saturation": saturation,
        "graphics_score": graphics_score,
        "graphics": graphics_score >= 0.5,
    }


def classify(subject) -> ClassifierResult:
    rgb, _ = subject.work(WORK_PIXELS)
    s = statistics(rgb)
    score = s["textured"] * (1.0 - s["graphics_score"])
    if s["graphics"]:
        reason = (
            f"flat graphics: {s['colors']:.3f} distinct colours per pixel, {s['flat_unclipped']:.0%} "
            f"exactly-flat (unclipped) pixels"
        )
    else:
        reason = (
            f"natural image: {s['textured']:.0%} of blocks textured, {s['flat_share']:.1%} flat pixels, "
            f"{s['colors']:.0%} distinct colours per pixel"
        )
    return ClassifierResult(
        name="texture",
        score=float(score),
        found=score >= 0.5,
        reason=reason,
        details=s,
    )
