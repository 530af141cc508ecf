#!/usr/bin/env python3
"""Rate saving of an adapter against the generic entropy model, at equal quality (issue 16).

Not a test: a measurement for docs/stable-diffusion.md. For every image the backbone's latent
is quantized with the adapter's per-channel steps at several quality factors s, then coded
once with the adapter's entropy model and once with the generic per-block Gaussian model:
same steps, so the same quality (the quantization error is reported too: about 1/12 of a
step squared for both; the adapter's, rounding around predicted means, is lower at low rates). Reported per s: bytes of both, their ratio
and the latent's squared error in step units; plus whole ``.dlc`` files through the real encoder
at the same quality (headers included) and the entropy coding time of both models; and the
codec as a user runs it (``--bpp`` rate control, the default DDIM steps, then decode), per image,
with and without the adapter: CPU seconds (the machine may be shared) and wall seconds.

    python bench/adapter_saving.py --model DIR --adapter DIR IMAGE_OR_DIR [...] [--json]
    python bench/adapter_saving.py --plot FIGURE.png RESULT.json [RESULT.json ...]

``--plot`` draws saved ``--json`` results (one line per result, labelled with ``--label``s or the
model folder's name): the rate of both models against the quality factor, and their ratio.
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


def plot(results: list[dict], labels: list[str], png: Path) -> None:
    """Rate (bpp, log scale) of the adapter and the generic model at each quality factor s, and
    the adapter's bytes as a fraction of the generic model's: the figure in docs/stable-diffusion.md."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2))
    rate, ratio = fig.subplots(1, 2)
    for i, (res, label) in enumerate(zip(results, labels)):
        colour = f"C{i}"
        s = [r["s"] for r in res["rates"]]
        rate.plot(s, [r["bpp_generic"] for r in res["rates"]], "--o", color=colour, mfc="none",
                  label=f"{label}: generic model")
        rate.plot(s, [r["bpp_adapter"] for r in res["rates"]], "-o", color=colour, label=f"{label}: adapter")
        ratio.plot(s, [r["ratio"] for r in res["rates"]], "-o", color=colour,
                   label=f"{label} (mean {res['mean_ratio']:.2f}, {res['images']} images)")
    for ax in (rate, ratio):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("quality factor s (same s: same steps, same quality)")
        ax.grid(True, which="both", alpha=0.3)
    rate.set_yscale("log")
    rate.set_ylabel("bits per pixel (latent payload)")
    rate.set_title("rate at equal quality")
    ratio.axhline(1.0, color="grey", lw=1)
    ratio.set_ylim(0, 1.1)
    ratio.set_ylabel("adapter bytes / generic model bytes")
    ratio.set_title("adapter's share of the generic model's bytes")
    rate.legend(fontsize=7)
    ratio.legend(fontsize=7, loc="lower left")
    fig.suptitle("Adapter vs generic entropy model, tiny random SD-layout models (CPU)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", type=Path, help="images or folders; with --plot: saved --json results")
    ap.add_argument("--plot", type=Path, default=None, metavar="PNG", help="draw saved results instead of measuring")
    ap.add_argument("--label", action="append", default=[], help="with --plot: a label per result, in order")
    ap.add_argument("--model")
    ap.add_argument("--adapter")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timing-bpp", type=float, default=0.1, help="target rate of the timed encode/decode")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.plot:
        results = [json.loads(p.read_text()) for p in a.images]
        labels = a.label + [Path(r["model"]).name for r in results[len(a.label):]]
        plot(results, labels, a.plot)
        print(f"figure written to {a.plot}")
        return
    if not (a.model and a.adapter):
        ap.error("--model and --adapter are required to measure")
    torch.set_num_threads(a.threads)

    from archiver.codecs.diffusion.adapter import get_adapted_backbone
    from archiver.codecs.diffusion.backbones import get_backbone
    from archiver.codecs.diffusion.backbones.diffusers_backbone import DiffusersBackbone
    from archiver.codecs.diffusion.entropy import generic_entropy_model
    from archiver.codecs.diffusion.pipeline import decode_bytes, encode_image
    from archiver.codecs.diffusion.quantize import QuantParams, to_units
    from archiver.codecs.diffusion.tensors import pad_to, to_tensor
    from archiver.imageio import load_image

    bare = get_backbone("diffusers", model_path=a.model, device="cpu")
    adapted = get_adapted_backbone("diffusers", model_path=a.model, device="cpu", adapter=a.adapter)
    same_steps = DiffusersBackbone.from_components(bare.vae, bare.unet, bare.scheduler, backbone_id=bare.id,
                                                   weights_digest=bare.weights_digest,
                                                   channel_steps=adapted.channel_steps(), device="cpu",
                                                   encoder_hidden_states=bare._ehs)  # a text-conditioned UNet
    ent, gen = adapted.entropy_model(), generic_entropy_model()
    files = _images(a.images)[: a.limit]
    acc = {ls: {"adapter": 0, "generic": 0, "err_a": [], "err_g": [], "t_a": 0.0, "t_g": 0.0, "pixels": 0}
           for ls in LOG2_S}
    whole = {"adapter": 0, "generic": 0}
    timing = {name: {"encode_cpu_s": 0.0, "encode_wall_s": 0.0, "decode_cpu_s": 0.0, "decode_wall_s": 0.0, "bpp": 0.0}
              for name in ("adapter", "generic")}
    megapixels = 0.0
    for f in files:
        img = load_image(f)
        with torch.no_grad():
            y = bare.encode(pad_to(to_tensor(img.rgb), bare.stride)).float()
        for ls in LOG2_S:
            u = to_units(y, QuantParams(mu=y.mean(dim=(0, 2, 3)), delta=adapted.channel_steps(), s=2.0**ls))
            r = acc[ls]
            for name, model, key in (("adapter", ent, "a"), ("generic", gen, "g")):
                t0 = time.process_time()  # CPU time: wall time means little on a shared machine
                data, u_hat = model.encode(u)
                if not torch.equal(model.decode(data, tuple(u.shape)).float(), u_hat.float()):
                    raise SystemExit(f"{f}: the {name} model does not round-trip")
                r[f"t_{key}"] += time.process_time() - t0
                r[name] += len(data)
                r[f"err_{key}"].append(float((u_hat - u).pow(2).mean()))
            r["pixels"] += img.width * img.height
        for q in (40.0, 50.0, 60.0):  # whole files at the same quality, headers included
            whole["adapter"] += encode_image(img, adapted, quality=q, steps=0).size_bytes
            whole["generic"] += encode_image(img, same_steps, quality=q, steps=0).size_bytes
        megapixels += img.width * img.height / 1e6
        for name, bb in (("adapter", adapted), ("generic", same_steps)):  # as `archiver encode --bpp`, decode
            t = timing[name]
            c0, w0 = time.process_time(), time.perf_counter()
            enc = encode_image(img, bb, bpp=a.timing_bpp)
            c1, w1 = time.process_time(), time.perf_counter()
            decode_bytes(enc.data, bb)
            c2, w2 = time.process_time(), time.perf_counter()
            t["encode_cpu_s"] += c1 - c0
            t["encode_wall_s"] += w1 - w0
            t["decode_cpu_s"] += c2 - c1
            t["decode_wall_s"] += w2 - w1
            t["bpp"] += enc.bpp
    rows = []
    for ls, r in acc.items():
        rows.append({"s": 2.0**ls, "bpp_generic": 8 * r["generic"] / r["pixels"], "bpp_adapter": 8 * r["adapter"] / r["pixels"],
                     "ratio": r["adapter"] / r["generic"], "mse_steps_generic": float(np.mean(r["err_g"])),
                     "mse_steps_adapter": float(np.mean(r["err_a"])),
                     "cpu_ms_per_image_generic": 1000 * r["t_g"] / len(files), "cpu_ms_per_image_adapter": 1000 * r["t_a"] / len(files)})
    res = {"images": len(files), "model": a.model, "adapter": a.adapter, "adapter_sha256": adapted.adapter_digest,
           "rates": rows, "mean_ratio": float(np.mean([r["ratio"] for r in rows])),
           "whole_files_q40_50_60": {**whole, "ratio": whole["adapter"] / whole["generic"]},
           "codec_per_image": {"target_bpp": a.timing_bpp, "threads": a.threads, "megapixels": megapixels / len(files),
                               **{name: {k: v / len(files) for k, v in t.items()} for name, t in timing.items()}}}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{len(files)} images; adapter {adapted.adapter_digest[:16]}")
    print("      s  generic bpp  adapter bpp  ratio  err(generic/adapter, step units^2)  code+decode CPU ms (generic/adapter)")
    for r in rows:
        print(f"{r['s']:7.3g}  {r['bpp_generic']:11.4f}  {r['bpp_adapter']:11.4f}  {r['ratio']:5.3f}  "
              f"{r['mse_steps_generic']:.4f} / {r['mse_steps_adapter']:.4f}                 "
              f"{r['cpu_ms_per_image_generic']:.1f} / {r['cpu_ms_per_image_adapter']:.1f}")
    print(f"mean ratio {res['mean_ratio']:.3f}; whole .dlc files at Q 40/50/60: {whole['adapter']} vs "
          f"{whole['generic']} bytes ({res['whole_files_q40_50_60']['ratio']:.3f})")
    cp = res["codec_per_image"]
    for name in ("adapter", "generic"):
        t = cp[name]
        print(f"{name:8s} --bpp {cp['target_bpp']:g}: {t['bpp']:.3f} bpp; encode {t['encode_cpu_s']:.2f} s CPU "
              f"({t['encode_wall_s']:.2f} s wall), decode {t['decode_cpu_s']:.2f} s CPU ({t['decode_wall_s']:.2f} s wall) "
              f"per image of {cp['megapixels']:.2f} MP, {cp['threads']} thread(s)")


if __name__ == "__main__":
    main()
