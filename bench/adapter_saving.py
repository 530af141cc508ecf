#!/usr/bin/env python3
"""Rate saving of an adapter against the generic entropy model, at equal quality (issue 16).

Not a test: a measurement for docs/stable-diffusion.md. For every image the backbone's latent
is quantized with the adapter's per-channel steps at several quality factors s, then coded
once with the adapter's entropy model and once with the generic per-block Gaussian model:
same steps, so the same quality (the quantization error is reported too; the adapter's,
rounding around predicted means, is never larger). Reported per s: bytes of both, their ratio
and the latent's squared error in step units; plus whole ``.dlc`` files through the real encoder
at the same quality (headers included) and the entropy coding time of both models.

    python bench/adapter_saving.py --model DIR --adapter DIR IMAGE_OR_DIR [...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LOG2_S = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0)


def _images(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        out += sorted(q for q in p.iterdir() if q.suffix.lower() in (".png", ".jpg", ".jpeg")) if p.is_dir() else [p]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from archiver.codec.backbones import get_backbone
    from archiver.codec.backbones.diffusers_backbone import DiffusersBackbone
    from archiver.codec.entropy import generic_entropy_model
    from archiver.codec.pipeline import encode_image
    from archiver.codec.quantize import QuantParams, to_units
    from archiver.codec.tensors import pad_to, to_tensor
    from archiver.imageio import load_image

    bare = get_backbone("diffusers", model_path=a.model, device="cpu")
    adapted = get_backbone("diffusers", model_path=a.model, device="cpu", adapter=a.adapter)
    same_steps = DiffusersBackbone.from_components(bare.vae, bare.unet, bare.scheduler, backbone_id=bare.id,
                                                   weights_digest=bare.weights_digest,
                                                   channel_steps=adapted.channel_steps(), device="cpu")
    ent, gen = adapted.entropy_model(), generic_entropy_model()
    files = _images(a.images)[: a.limit]
    acc = {ls: {"adapter": 0, "generic": 0, "err_a": [], "err_g": [], "t_a": 0.0, "t_g": 0.0, "pixels": 0}
           for ls in LOG2_S}
    whole = {"adapter": 0, "generic": 0}
    for f in files:
        img = load_image(f)
        with torch.no_grad():
            y = bare.encode(pad_to(to_tensor(img.rgb), bare.stride)).float()
        for ls in LOG2_S:
            u = to_units(y, QuantParams(mu=y.mean(dim=(0, 2, 3)), delta=adapted.channel_steps(), s=2.0**ls))
            r = acc[ls]
            for name, model, key in (("adapter", ent, "a"), ("generic", gen, "g")):
                t0 = time.perf_counter()
                data, u_hat = model.encode(u)
                model.decode(data, tuple(u.shape))
                r[f"t_{key}"] += time.perf_counter() - t0
                r[name] += len(data)
                r[f"err_{key}"].append(float((u_hat - u).pow(2).mean()))
            r["pixels"] += img.width * img.height
        for q in (40.0, 50.0, 60.0):  # whole files at the same quality, headers included
            whole["adapter"] += encode_image(img, adapted, quality=q, steps=0).size_bytes
            whole["generic"] += encode_image(img, same_steps, quality=q, steps=0).size_bytes
    rows = []
    for ls, r in acc.items():
        rows.append({"s": 2.0**ls, "bpp_generic": 8 * r["generic"] / r["pixels"], "bpp_adapter": 8 * r["adapter"] / r["pixels"],
                     "ratio": r["adapter"] / r["generic"], "mse_steps_generic": float(np.mean(r["err_g"])),
                     "mse_steps_adapter": float(np.mean(r["err_a"])),
                     "ms_per_image_generic": 1000 * r["t_g"] / len(files), "ms_per_image_adapter": 1000 * r["t_a"] / len(files)})
    res = {"images": len(files), "model": a.model, "adapter": a.adapter, "adapter_sha256": adapted.adapter_digest,
           "rates": rows, "mean_ratio": float(np.mean([r["ratio"] for r in rows])),
           "whole_files_q40_50_60": {**whole, "ratio": whole["adapter"] / whole["generic"]}}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{len(files)} images; adapter {adapted.adapter_digest[:16]}")
    print("      s  generic bpp  adapter bpp  ratio  err(generic/adapter, step units^2)  code+decode ms (generic/adapter)")
    for r in rows:
        print(f"{r['s']:7.3g}  {r['bpp_generic']:11.4f}  {r['bpp_adapter']:11.4f}  {r['ratio']:5.3f}  "
              f"{r['mse_steps_generic']:.4f} / {r['mse_steps_adapter']:.4f}                 "
              f"{r['ms_per_image_generic']:.1f} / {r['ms_per_image_adapter']:.1f}")
    print(f"mean ratio {res['mean_ratio']:.3f}; whole .dlc files at Q 40/50/60: {whole['adapter']} vs "
          f"{whole['generic']} bytes ({res['whole_files_q40_50_60']['ratio']:.3f})")


if __name__ == "__main__":
    main()
