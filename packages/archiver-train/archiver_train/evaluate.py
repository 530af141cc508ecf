"""Evaluation of a tiny model on a held-out set (Kodak; evaluation only, never for training):
autoencoder-only quality, decode time of one image, and real codec rate/quality at a few target
bpp with and without the diffusion step.

``python -m archiver_train.evaluate KODAK_DIR [--weights DIR] [--bpp 0.1,0.2,0.3] [--json]``
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import torch

from archiver.text import emit


def _to_x(img) -> torch.Tensor:
    a = np.asarray(img.rgb, dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1)[None] / 127.5 - 1.0


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def _timed(fn, *a):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*a)
    return out, time.perf_counter() - w, time.process_time() - c


@torch.inference_mode()
def ae_only(backbone, images) -> dict:
    """Encode -> decode without quantization: the ceiling any rate can reach with these weights."""
    from archiver.metrics import ms_ssim, psnr

    ps, ms = [], []
    for img in images:
        x = _to_x(img)
        h, w = x.shape[-2:]
        s = backbone.stride
        xp = torch.nn.functional.pad(x, (0, (-w) % s, 0, (-h) % s), mode="reflect")
        rec = _to_u8(backbone.decode(backbone.encode(xp))[..., :h, :w])
        ref = np.asarray(img.rgb)
        ps.append(psnr(ref, rec))
        ms.append(ms_ssim(ref, rec))
    return {"psnr": float(np.mean(ps)), "ms_ssim": float(np.mean(ms)), "images": len(images)}


@torch.inference_mode()
def decode_time(backbone, width: int = 768, height: int = 512, repeat: int = 3) -> dict:
    """Seconds to decode a width x height latent with the autoencoder and for one denoiser call.
    Wall time depends on what else runs on the machine; CPU time (all threads) is reported too."""
    z = torch.randn(1, backbone.latent_channels, height // backbone.stride, width // backbone.stride)
    backbone.decode(z)
    dec = [_timed(backbone.decode, z)[1:] for _ in range(repeat)]
    unet = [_timed(backbone.model_output, z, 100)[1:] for _ in range(repeat)]
    return {"size": f"{width}x{height}", "threads": torch.get_num_threads(),
            "vae_decode_wall_s": min(d[0] for d in dec), "vae_decode_cpu_s": min(d[1] for d in dec),
            "denoiser_call_wall_s": min(d[0] for d in unet), "denoiser_call_cpu_s": min(d[1] for d in unet)}


def codec_sweep(backbone, images, bpps=(0.1, 0.2, 0.3), steps: int = 4) -> list[dict]:
    """Real files (rate control on the real size), decoded with ``steps`` DDIM steps and with none."""
    from archiver.codecs.diffusion.pipeline import decode_bytes, encode_image
    from archiver.metrics import ms_ssim, psnr

    rows = []
    for target in bpps:
        acc = {"target_bpp": target, "bpp": [], "t": [], "psnr": [], "ms_ssim": [], "psnr_no_diffusion": [],
               "ms_ssim_no_diffusion": []}
        for img in images:
            enc = encode_image(img, backbone, bpp=target, steps=steps)
            ref = np.asarray(img.rgb)
            with_d = np.asarray(decode_bytes(enc.data, backbone).image.convert("RGB"))
            no_d = np.asarray(decode_bytes(enc.data, backbone, steps=0).image.convert("RGB"))
            acc["bpp"].append(enc.bpp)
            acc["t"].append(enc.t)
            acc["psnr"].append(psnr(ref, with_d))
            acc["ms_ssim"].append(ms_ssim(ref, with_d))
            acc["psnr_no_diffusion"].append(psnr(ref, no_d))
            acc["ms_ssim_no_diffusion"].append(ms_ssim(ref, no_d))
        rows.append({k: (float(np.mean(v)) if isinstance(v, list) else v) for k, v in acc.items()} | {"steps": steps})
    return rows


def _human(r: dict) -> str:
    a = r["ae_only"]
    d = r["decode_time"]
    lines = [f"weights {r['weights_sha256'][:12]}  images {a['images']}",
             f"AE only: PSNR {a['psnr']:.2f} dB  MS-SSIM {a['ms_ssim']:.4f}",
             f"decode {d['size']}: VAE {d['vae_decode_wall_s']:.2f} s wall ({d['vae_decode_cpu_s']:.2f} s CPU), "
             f"denoiser call {d['denoiser_call_wall_s']:.2f} s wall ({d['denoiser_call_cpu_s']:.2f} s CPU)"]
    for row in r.get("codec", []):
        lines.append(f"target {row['target_bpp']:.2f} bpp: real {row['bpp']:.3f}  t {row['t']:.0f}  "
                     f"PSNR {row['psnr']:.2f} / {row['psnr_no_diffusion']:.2f} dB  "
                     f"MS-SSIM {row['ms_ssim']:.4f} / {row['ms_ssim_no_diffusion']:.4f}  (with / without diffusion)")
    return "\n".join(lines)


@click.command()
@click.argument("image_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--weights", type=click.Path(path_type=Path), default=None, help="model folder (default: shipped)")
@click.option("--bpp", default="0.1,0.2,0.3", show_default=True, help="target rates; empty = AE only")
@click.option("--steps", type=int, default=4, show_default=True)
@click.option("--limit", type=int, default=None, help="first N images only")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(image_dir, weights, bpp, steps, limit, threads, as_json):
    """Measure a tiny model on IMAGE_DIR (evaluation images only)."""
    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver.imageio import load_image

    torch.set_num_threads(threads)
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[:limit]
    images = [load_image(p) for p in files]
    b = load_tiny(device="cpu", weights_dir=weights)
    res = {"weights_sha256": b.weights_digest, "ae_only": ae_only(b, images), "decode_time": decode_time(b)}
    targets = [float(v) for v in bpp.split(",") if v.strip()]
    if targets:
        res["codec"] = codec_sweep(b, images, targets, steps)
    emit(res, as_json, _human)


if __name__ == "__main__":  # pragma: no cover
    main()
