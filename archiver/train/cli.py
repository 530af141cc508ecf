"""``archiver train``: train the tiny backbone's learned parts, resumably, on a folder of images."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from ..output import emit

STAGES = ("ae", "denoiser", "entropy", "codec")


def _human(res: dict) -> str:
    lines = []
    for r in res["stages"]:
        keys = [k for k in ("step", "loss", "val_psnr", "best_val_psnr", "val_loss", "best_val_loss", "val_bpp", "seconds") if k in r]
        lines.append(f"{r['stage']:9s} " + "  ".join(f"{k}={r[k]:.4g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys))
    if res.get("exported"):
        lines.append(f"model written to {res['exported']}")
    return "\n".join(lines)


@click.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("checkpoints/tiny"), show_default=True,
              help="checkpoints, logs and the assembled model (tiny.safetensors + tiny.json)")
@click.option("--stage", type=click.Choice(STAGES + ("all",)), default="all", show_default=True)
@click.option("--steps", type=int, default=None, help="optimizer steps per stage (default: per-stage)")
@click.option("--minutes", type=float, default=None, help="wall-clock budget per stage (stops at steps or time)")
@click.option("--batch", type=int, default=None, help="batch size (default: per-stage)")
@click.option("--crop", type=int, default=None, help="crop size in pixels (default: per-stage)")
@click.option("--lr", type=float, default=None, help="learning rate (default: per-stage)")
@click.option("--resume", is_flag=True, help="continue from the checkpoints in --out")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True, help="torch CPU threads")
@click.option("--max-files", type=int, default=None, help="use only the first N images (for quick tries)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
def train(data_dir, out, stage, steps, minutes, batch, crop, lr, resume, seed, threads, max_files, as_json):
    """Train the embedded tiny backbone on the images in DATA_DIR (never on the evaluation set).

    Stages run in order: the autoencoder, the latent denoiser (on cached latents of the trained
    autoencoder), per-channel quantization steps and the entropy model, then the denoiser's
    fine-tuning on the codec's own decode path (real quantization, DDIM, decoder). Each stage
    keeps a checkpoint and its best-so-far weights in --out; the assembled model is rewritten
    after each.
    """
    from . import pipeline

    if steps is not None and steps < 1:
        raise UsageError("--steps must be at least 1")
    res = pipeline.run(data_dir, out, stages=STAGES if stage == "all" else (stage,), steps=steps,
                       minutes=minutes, batch=batch, crop=crop, lr=lr, resume=resume, seed=seed,
                       threads=threads, max_files=max_files, quiet=as_json)
    emit(res, as_json, _human)
