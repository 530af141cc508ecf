"""Texture vs graphics: is this a texture-heavy natural photo (safe to regenerate) or a flat
graphic, screenshot or document (where invented detail is visible and wrong)?

Statistics on the luma of a ~0.25 MP working copy, each one explainable:
- ``flat_share``: share of pixels whose 3x3 neighbourhood is exactly constant. Camera noise makes
  this near 0 for photos; rendered graphics and screenshots have large exactly-flat areas.
- ``top_colors``: share of pixels taken by the 16 most frequent colours. Photos spread over
  tens of thousands of colours; graphics use a palette.
- ``colors``: distinct colours per pixel (capped at 1).
- ``textured``: share of 16x16 blocks with real local variation (luma std >= 5 and mean
  |Laplacian| >= 2.5): grass, foliage, stone, water, fabric.
- ``edge_density`` (Canny edges), ``hf_energy`` (mean |Laplacian|) and ``saturation`` (mean HSV
  saturation) are reported to explain decisions; they do not vote.

``graphics_score`` = max(flat_share / 0.3, top_colors / 0.5) clipped to 0..1, graphics when >= 0.5.
``score`` (texture) = textured * (1 - graphics_score).
"""

from __future__ import annotations

import numpy as np

from . import ClassifierResult

WORK_PIXELS = 262_144
BLOCK = 16


def statistics(rgb: np.ndarray) -> dict:
    import cv2

    rgb = np.ascontiguousarray(rgb)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    n = float(h * w)

    # exactly-flat neighbourhoods: max == min over 3x3
    k = np.ones((3, 3), np.uint8)
    flat = cv2.dilate(gray, k) == cv2.erode(gray, k)
    flat_share = float(flat.mean())

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

    graphics_score = float(min(1.0, max(flat_share / 0.3, top_colors / 0.5)))
    return {
        "flat_share": flat_share,
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
            f"flat graphics: {s['flat_share']:.0%} exactly-flat pixels, top 16 colours cover "
            f"{s['top_colors']:.0%} of the image"
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
