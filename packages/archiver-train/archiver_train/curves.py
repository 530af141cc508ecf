"""Learning curves of the rd stage: validation PSNR and bits per pixel against training pixels,
read from ``train.log``, plotted, and extrapolated to the pixels (and GPU minutes) a target needs.

``python -m archiver_train.curves RUN_DIR [RUN_DIR ...] [--png PATH] [--target-bpp 0.3
--target-psnr DB] [--gpu-mpx-per-s R] [--json]``

Each evaluation codes the held-out crops at a few quality factors with the real coder, so it
gives a few (bpp, PSNR) points; the PSNR *at a fixed rate* is interpolated between them (linear
in log bpp), which is what can be compared across training time and with another model.
The extrapolation fits ``PSNR = a + b * log10(pixels)`` to the second half of the curve: a
straight line in log-pixels, which learned codecs follow over a decade or two before they
saturate, so it is a rough lower bound on the pixels needed, not a promise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import click
import numpy as np

from archiver.errors import UsageError
from archiver.text import emit

#: compressai mbt2018-mean, quality-3 size, random init, one H200 (issue 17): 25k steps of batch
#: 16 of 256-px crops in 6.5 minutes
REFERENCE_GPU_MPX_PER_S = 25_000 * 16 * 256 * 256 / (6.5 * 60) / 1e6


def load_evals(run_dir: Path, stage: str = "rd") -> list[dict]:
    """The stage's evaluation records, in order, with the pixels seen at each (0 for the start)."""
    log = Path(run_dir) / "train.log"
    if not log.is_file():
        raise UsageError(f"{run_dir}: no train.log")
    out = []
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("stage") == stage and rec.get("event") == "eval" and "pixels" in rec:
            out.append(rec)
    # a resumed run may evaluate the same step again: keep the last record per step
    by_step = {r["step"]: r for r in out}
    return [by_step[s] for s in sorted(by_step)]


def rd_points(rec: dict) -> list[tuple[float, float]]:
    """(bpp, PSNR) at each validation quality factor, by increasing rate."""
    pts = []
    for k, v in rec.items():
        if k.startswith("val_bpp_s"):
            s = k[len("val_bpp_s"):]
            if f"val_psnr_s{s}" in rec:
                pts.append((float(v), float(rec[f"val_psnr_s{s}"])))
    return sorted(pts)


#: how far beyond its lowest / highest measured rate an evaluation's curve is extended (a factor
#: in bpp, along the end segment's slope): enough to bridge a point that sits just off a target
RATE_REACH = 1.25


def psnr_at(rec: dict, bpp: float) -> Optional[float]:
    """PSNR at ``bpp``, linear in log(bpp) between the evaluation's points; up to ``RATE_REACH``
    beyond its end points along the end segment (None further out)."""
    pts = [(b, p) for b, p in rd_points(rec) if b > 0]
    if len(pts) < 2:
        return None
    if not pts[0][0] / RATE_REACH <= bpp <= pts[-1][0] * RATE_REACH:
        return None
    i = next((k for k in range(len(pts) - 1) if bpp <= pts[k + 1][0]), len(pts) - 2)
    (b0, p0), (b1, p1) = pts[i], pts[i + 1]
    if b1 <= b0:
        return None
    w = (math.log(bpp) - math.log(b0)) / (math.log(b1) - math.log(b0))
    return p0 + w * (p1 - p0)


def fit_log_pixels(pixels, values) -> Optional[tuple[float, float]]:
    """(a, b) of ``value = a + b * log10(pixels)`` fitted to the second half of the points."""
    pts = [(p, v) for p, v in zip(pixels, values) if p > 0 and v is not None]
    pts = pts[len(pts) // 2:]
    if len(pts) < 3:
        return None
    x = np.log10([p for p, _ in pts])
    y = np.array([v for _, v in pts])
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def extrapolate(evals: list[dict], bpp: float, target_psnr: float, mpx_per_s: float) -> dict:
    """Pixels (and GPU minutes at ``mpx_per_s``) until PSNR at ``bpp`` reaches ``target_psnr``."""
    pixels = [r["pixels"] for r in evals]
    values = [psnr_at(r, bpp) for r in evals]
    fit = fit_log_pixels(pixels, values)
    res = {"bpp": bpp, "target_psnr": target_psnr, "points": sum(v is not None for v in values),
           "last_pixels": pixels[-1] if pixels else 0,
           "last_psnr": next((v for v in reversed(values) if v is not None), None)}
    if fit is None:
        return {**res, "fit": None, "pixels_needed": None, "gpu_minutes": None}
    a, b = fit
    res["fit"] = {"a": a, "b_per_decade": b}
    if b <= 0:
        return {**res, "pixels_needed": None, "gpu_minutes": None}
    need = 10 ** ((target_psnr - a) / b)
    return {**res, "pixels_needed": need, "gpu_minutes": need / (mpx_per_s * 1e6) / 60}


BASELINE_QUALITIES = tuple(range(5, 90, 5))


def baseline(data_dir: Path, weights: Optional[Path], cache_dir: Path) -> dict:
    """Another tiny model (default: the shipped weights) on the same held-out crops through the
    real codec: bits of the latent section only (no header, as the rd stage's validation counts
    them) and PSNR of the default decode, over a grid of qualities; cached per weights digest."""
    import torch

    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver.codecs.diffusion.pipeline import decode_bytes, encode_image
    from archiver.codecs.diffusion import container
    from archiver.imageio import load_image
    from archiver.metrics import psnr
    from . import data as D
    from . import rd as RD

    bb = load_tiny(device="cpu", weights_dir=weights)
    cache = Path(cache_dir) / f"baseline_{bb.weights_digest[:16]}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    imgs = D.load_set(data_dir, min_side=RD.VAL_SIDE)
    _, val_ids = D.holdout(imgs, RD.N_VAL, RD.VAL_SIDE)
    crops = [D.center_crops([imgs.images[i]], RD.VAL_SIDE)[0] for i in val_ids]
    rec: dict = {"weights_sha256": bb.weights_digest, "images": len(crops)}
    import io

    from PIL import Image

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        return buf.getvalue()

    arrays = [((c.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy() for c in crops]
    images = [load_image(png(a)) for a in arrays]
    with torch.no_grad():
        for q in BASELINE_QUALITIES:
            bits, ps = [], []
            for a, img in zip(arrays, images):
                enc = encode_image(img, bb, quality=float(q))
                bits.append(8 * len(container.unpack(enc.data)[1][container.LATENT]))
                ps.append(psnr(a, np.asarray(decode_bytes(enc.data, bb).image)))
            rec[f"val_bpp_s{q}"] = float(np.mean(bits)) / (RD.VAL_SIDE**2)
            rec[f"val_psnr_s{q}"] = float(np.mean(ps))
    cache.write_text(json.dumps(rec) + "\n")
    return rec


def plot(runs: dict[str, list[dict]], png: Path, bpps=(0.1, 0.2, 0.3), reference: Optional[dict] = None,
         reference_name: str = "release 2") -> None:
    """Validation PSNR at fixed rates and bpp at each quality factor, against training pixels;
    ``reference``'s PSNR at the same rates as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = dict(zip(bpps, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for name, evals in runs.items():
        evals = [r for r in evals if r["pixels"] > 0]  # the step-0 evaluation has no place on a log axis
        px = np.array([r["pixels"] for r in evals], dtype=float)
        for b in bpps:
            v = [psnr_at(r, b) for r in evals]
            keep = [i for i, x in enumerate(v) if x is not None]
            if keep:
                ax1.plot(px[keep], [v[i] for i in keep], marker="o", ms=3, color=colors.get(b),
                         label=f"{name}: PSNR at {b:g} bpp")
        keys = sorted({k for r in evals for k in r if k.startswith("val_bpp_s")}, key=lambda k: float(k[9:]))
        for k in keys:
            ax2.plot(px, [r.get(k, np.nan) for r in evals], marker="o", ms=3, label=f"{name}: s = {k[9:]}")
    if reference:
        for b in bpps:
            v = psnr_at(reference, b)
            if v is not None:
                ax1.axhline(v, ls="--", lw=1, color=colors.get(b), label=f"{reference_name} at {b:g} bpp: {v:.2f} dB")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("training pixels seen")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_ylabel("validation PSNR (dB), held-out images of train/")
    ax2.set_ylabel("validation bits per pixel (real rANS)")
    ax2.set_yscale("log")
    fig.suptitle("rd stage learning curves (validation: centre crops of held-out training-set images)")
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _human(res: dict) -> str:
    lines = []
    for name, r in res["runs"].items():
        lines.append(f"{name}: {r['evaluations']} evaluations, {r['last_pixels'] / 1e6:.1f} Mpx seen")
        for b, v in r["psnr_at"].items():
            lines.append(f"  PSNR at {b} bpp: {'-' if v is None else f'{v:.2f} dB'}")
    ex = res.get("extrapolation")
    if ex:
        if ex.get("pixels_needed") is None:
            lines.append(f"extrapolation to {ex['target_psnr']} dB at {ex['bpp']} bpp: not possible yet (too few points or no progress)")
        else:
            lines.append(f"extrapolation to {ex['target_psnr']} dB at {ex['bpp']} bpp: {ex['pixels_needed'] / 1e9:.1f} Gpx"
                         f" = {ex['gpu_minutes']:.1f} GPU minutes at {res['gpu_mpx_per_s']:.0f} Mpx/s")
    if res.get("baseline"):
        b = res["baseline"]
        lines.append(f"baseline {b['weights_sha256'][:12]}: " + ", ".join(
            f"{k} bpp {'-' if v is None else f'{v:.2f} dB'}" for k, v in b["psnr_at"].items()))
    if res.get("png"):
        lines.append(f"plot: {res['png']}")
    return "\n".join(lines)


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--png", type=click.Path(path_type=Path), default=None, help="write the plot here")
@click.option("--target-bpp", type=float, default=0.3, show_default=True)
@click.option("--target-psnr", type=float, default=None, help="extrapolate the first run to this PSNR at --target-bpp")
@click.option("--gpu-mpx-per-s", type=float, default=REFERENCE_GPU_MPX_PER_S, show_default=True,
              help="training throughput for the GPU-minutes estimate (default: the issue's H200 reference run)")
@click.option("--baseline", "baseline_data", type=click.Path(path_type=Path), default=None,
              help="training-data folder: also measure the shipped weights (or --baseline-weights) on the same held-out crops")
@click.option("--baseline-weights", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True)
def main(runs, png, target_bpp, target_psnr, gpu_mpx_per_s, baseline_data, baseline_weights, as_json):
    """Learning curves of one or more training runs (their --out folders)."""
    data = {Path(r).name or str(r): load_evals(r) for r in runs}
    res = {"runs": {}, "gpu_mpx_per_s": gpu_mpx_per_s}
    ref = None
    if baseline_data is not None:
        ref = baseline(baseline_data, baseline_weights, Path(runs[0]))
        res["baseline"] = {"weights_sha256": ref["weights_sha256"],
                           "psnr_at": {f"{b:g}": psnr_at(ref, b) for b in (0.1, 0.2, 0.3)}}
        if target_psnr is None:
            target_psnr = res["baseline"]["psnr_at"].get(f"{target_bpp:g}")
    for name, evals in data.items():
        if not evals:
            raise UsageError(f"{name}: no rd evaluations in its train.log")
        res["runs"][name] = {"evaluations": len(evals), "last_pixels": evals[-1]["pixels"],
                             "psnr_at": {f"{b:g}": psnr_at(evals[-1], b) for b in (0.1, 0.2, 0.3)}}
    if target_psnr is not None:
        res["extrapolation"] = extrapolate(next(iter(data.values())), target_bpp, target_psnr, gpu_mpx_per_s)
    if png:
        plot(data, png, reference=ref)
        res["png"] = str(png)
    emit(res, as_json, _human)


if __name__ == "__main__":  # pragma: no cover
    from .common import standalone

    standalone(main, "python -m archiver_train.curves")
