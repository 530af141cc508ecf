"""Calibrates the codec's ``t_scale`` for a tiny model on *training* images (never Kodak).

The codec starts decoding at ``round(t_scale * t_snr)``. Uniform quantization noise is not the
Gaussian noise of the forward process and a small denoiser over-smooths when asked to remove
too much, so the best start can be below the SNR match. This encodes a few training images at a
few rates, decodes each file from ``t_scale * t_snr`` for several ``t_scale`` and keeps the one
with the best mean MS-SSIM; the result goes to ``<model dir>/calibration.json`` and into the
assembled model's config (``codec.t_scale``).

``python -m archiver_train.calibrate DATA_DIR --out checkpoints/tiny [--n 8] [--json]``
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import torch

from archiver.text import emit

SCALES = (0.0, 0.125, 0.25, 0.5, 1.0)
BPPS = (0.1, 0.2, 0.3)


def calibrate(backbone, images, scales=SCALES, bpps=BPPS, steps: int = 4) -> dict:
    from archiver.codecs.diffusion.pipeline import decode_bytes, encode_image
    from archiver.metrics import ms_ssim, psnr

    table = {s: {"ms_ssim": [], "psnr": []} for s in scales}
    for img in images:
        ref = np.asarray(img.rgb)
        for bpp in bpps:
            for s in scales:
                backbone.t_scale = s
                enc = encode_image(img, backbone, bpp=bpp, steps=steps)
                rec = np.asarray(decode_bytes(enc.data, backbone).image.convert("RGB"))
                table[s]["ms_ssim"].append(ms_ssim(ref, rec))
                table[s]["psnr"].append(psnr(ref, rec))
    rows = {str(s): {k: float(np.mean(v)) for k, v in m.items()} for s, m in table.items()}
    best = max(scales, key=lambda s: (round(rows[str(s)]["ms_ssim"], 4), rows[str(s)]["psnr"]))
    backbone.t_scale = 1.0
    return {"t_scale": best, "by_scale": rows, "images": len(images), "bpps": list(bpps), "steps": steps}


@click.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("checkpoints/tiny"), show_default=True)
@click.option("--n", "n", type=int, default=8, show_default=True, help="training images to use")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(data_dir, out, n, threads, as_json):
    """Pick t_scale for the model assembled in --out, on images from DATA_DIR (training data)."""
    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver.imageio import load_image
    from .data import list_images
    from .export import assemble

    torch.set_num_threads(threads)
    files = list_images(data_dir)
    pick = [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]
    b = load_tiny(device="cpu", weights_dir=out)
    res = calibrate(b, [load_image(p) for p in pick])
    res["files"] = [str(p.relative_to(data_dir)) for p in pick]
    (Path(out) / "calibration.json").write_text(json.dumps(res, indent=2) + "\n")
    assemble(out)
    emit(res, as_json, lambda r: "\n".join([f"t_scale = {r['t_scale']}"] + [
        f"  {s}: MS-SSIM {m['ms_ssim']:.4f}  PSNR {m['psnr']:.2f}" for s, m in r["by_scale"].items()]))


if __name__ == "__main__":  # pragma: no cover
    main()
