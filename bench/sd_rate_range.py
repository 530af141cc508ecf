#!/usr/bin/env python3
"""Why did SD-2.1-architecture *random* weights make rate control pick t = 0 at 0.1 bpp and stop
at 0.176 bpp when asked for 0.3 (issue 16)? The random weights, or the generic entropy model?

Not a test: a measurement for docs/stable-diffusion.md. On the CPU, with a randomly initialised
autoencoder of Stable Diffusion 2.1's VAE architecture (83M parameters, the scaling factor 0.18215
of the *trained* VAE) and any small denoiser (rate control and the SNR-matched t never call the
UNet), it encodes images at target rates and reports, for each variant:

- the scaled latent's standard deviation (a trained SD VAE gives about 1 by construction);
- the highest rate the codec reaches (quality 100, the finest step the quality scale allows);
- what rate control does at 0.1 and 0.3 bpp, and the timestep t it picks.

Variants: ``random`` (as in the issue); ``rescaled`` (the same weights with the scaling factor
set to 1/std of its latents, i.e. unit variance as a trained VAE has); ``adapter steps`` (the
random weights as they are, with per-channel steps scaled to the latent's RMS the way
``archiver train adapter`` writes them, entropy model still the generic one).

    python bench/sd_rate_range.py IMAGE [IMAGE ...] [--json] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: Stable Diffusion 2.1's VAE (stabilityai/stable-diffusion-2-1, vae/config.json)
SD21_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, sample_size=768, scaling_factor=0.18215)


def _backbone(vae, scaling_factor, steps=None):
    from diffusers import DDIMScheduler, UNet2DModel

    from archiver.codecs.diffusion.backbones.diffusers_backbone import DiffusersBackbone

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=4,
                       block_out_channels=[8, 16], down_block_types=["DownBlock2D", "DownBlock2D"],
                       up_block_types=["UpBlock2D", "UpBlock2D"], add_attention=False)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False)  # SD 2.1's schedule
    bb = DiffusersBackbone.from_components(vae, unet, sched, backbone_id="diffusers", weights_digest="00" * 32,
                                           channel_steps=steps, device="cpu")
    bb.scaling_factor = float(scaling_factor)
    return bb


def measure(bb, img) -> dict:
    from archiver.codecs.diffusion.pipeline import encode_image
    from archiver.codecs.diffusion.tensors import pad_to, to_tensor

    with torch.no_grad():
        y = bb.encode(pad_to(to_tensor(img.rgb), bb.stride))
    out = {"latent_std": float(y.std()), "max_bpp": encode_image(img, bb, quality=100, steps=0).bpp}
    for target in (0.1, 0.3):
        r = encode_image(img, bb, bpp=target, steps=4)
        out[f"at_{target:g}"] = {"bpp": round(r.bpp, 4), "quality": round(r.quality, 1), "t": r.t,
                                 "t_snr": r.t_snr, "note": r.rate_note}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from diffusers import AutoencoderKL

    from archiver.imageio import load_image

    torch.manual_seed(0)
    t0 = time.time()
    vae = AutoencoderKL(**SD21_VAE).eval()
    results = []
    for path in a.images:
        img = load_image(path)
        random = _backbone(vae, SD21_VAE["scaling_factor"])
        with torch.no_grad():
            from archiver.codecs.diffusion.tensors import pad_to, to_tensor

            std = float(random.encode(pad_to(to_tensor(img.rgb), 8)).std())
        rms_steps = torch.full((4,), std)  # what the adapter's rule gives: mean(delta^2) = latent variance
        row = {"image": path.name, "size": f"{img.width}x{img.height}",
               "random": measure(random, img),
               "rescaled": measure(_backbone(vae, SD21_VAE["scaling_factor"] / std), img),
               "adapter_steps": measure(_backbone(vae, SD21_VAE["scaling_factor"], rms_steps), img)}
        results.append(row)
        if not a.json:
            for k in ("random", "rescaled", "adapter_steps"):
                m = row[k]
                print(f"{path.name} {k:13s} latent std {m['latent_std']:.4f}  max {m['max_bpp']:.3f} bpp  "
                      f"0.1 -> {m['at_0.1']['bpp']} bpp (Q {m['at_0.1']['quality']}, t {m['at_0.1']['t']})  "
                      f"0.3 -> {m['at_0.3']['bpp']} bpp (Q {m['at_0.3']['quality']}, t {m['at_0.3']['t']})", flush=True)
    if a.json:
        print(json.dumps({"vae": "SD 2.1 architecture, random weights (seed 0)", "results": results,
                          "seconds": round(time.time() - t0, 1)}, indent=2))


if __name__ == "__main__":
    main()
