"""The quality guard: a lossy reconstruction is accepted only when it meets the policy's floor
(global PSNR, MS-SSIM, and the worst PSNR over the protected regions)."""

from __future__ import annotations

from PIL import Image

from ..imageio import LoadedImage


def quality(original: LoadedImage, recon: Image.Image, regions) -> dict:
    from ..metrics import ms_ssim, psnr

    rgb = recon.convert("RGB")
    if rgb.size != original.rgb.size:
        return {"psnr": 0.0, "ms_ssim": 0.0, "region_psnr": 0.0, "size_mismatch": True}
    out = {"psnr": psnr(original.rgb, rgb), "ms_ssim": ms_ssim(original.rgb, rgb), "region_psnr": None}
    vals = []
    for box in regions or ():
        l, t, r, b = (int(v) for v in box)
        l, t = max(0, l), max(0, t)
        r, b = min(rgb.width, r), min(rgb.height, b)
        if r > l and b > t:
            vals.append(psnr(original.rgb, rgb, box=(l, t, r, b)))
    if vals:
        out["region_psnr"] = min(vals)
    return out


def below_floor(q: dict, floor: dict) -> str | None:
    """None when the reconstruction meets the floor, else why not."""
    if q.get("size_mismatch"):
        return "reconstruction has the wrong size"
    checks = (("min_psnr", "psnr", "PSNR", "dB"), ("min_ms_ssim", "ms_ssim", "MS-SSIM", ""),
              ("min_region_psnr", "region_psnr", "protected-region PSNR", "dB"))
    for fk, qk, label, unit in checks:
        lim, val = floor.get(fk), q.get(qk)
        if lim is not None and val is not None and val < lim:
            return f"quality guard: {label} {val:.3f}{unit} below the floor {lim}{unit}"
    return None
