"""``archiver train``: train the tiny backbone's learned parts, resumably, on a folder of images."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from ..output import emit

STAGES = ("rd", "denoiser", "realism", "ae", "entropy", "codec")


def _human(res: dict) -> str:
    lines = []
    for r in res["stages"]:
        keys = [k for k in ("step", "loss", "val_psnr", "best_val_psnr", "val_loss", "best_val_loss", "val_bpp", "pixels", "seconds") if k in r]
        lines.append(f"{r['stage']:9s} " + "  ".join(f"{k}={r[k]:.4g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys))
    if res.get("exported"):
        lines.append(f"model written to {res['exported']}")
    return "\n".join(lines)


@click.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("checkpoints/tiny"), show_default=True,
              help="checkpoints, logs and the assembled model (tiny.safetensors + tiny.json)")
@click.option("--stage", type=click.Choice(STAGES + ("all", "release2")), default="all", show_default=True,
              help="one stage, 'all' (release 3: rd, denoiser, realism) or 'release2' (ae, denoiser, entropy, codec)")
@click.option("--steps", type=int, default=None, help="optimizer steps per stage (default: per-stage)")
@click.option("--minutes", type=float, default=None,
              help="wall-clock budget (stops at steps or time); with several stages, shared by the plan in docs/training.md")
@click.option("--batch", type=int, default=None, help="batch size (default: per-stage)")
@click.option("--crop", type=int, default=None, help="crop size in pixels (default: per-stage)")
@click.option("--lr", type=float, default=None, help="learning rate (default: per-stage)")
@click.option("--resume", is_flag=True, help="continue from the checkpoints in --out")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True, help="torch CPU threads")
@click.option("--device", type=str, default="auto", show_default=True,
              help="cuda, cpu or auto (cuda when present) for the rd, denoiser and realism stages")
@click.option("--max-files", type=int, default=None, help="use only the first N images (for quick tries)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
def train(data_dir, out, stage, steps, minutes, batch, crop, lr, resume, seed, threads, device, max_files, as_json):
    """Train the embedded tiny backbone on the images in DATA_DIR (never on the evaluation set).

    Release 3 (the default, `--stage all`): the autoencoder and its entropy model trained
    jointly on rate + distortion (rd), the latent denoiser on cached latents (denoiser), then
    the decoder and denoiser fine-tuned for realism on the codec's decode path (realism).
    `--stage release2` runs the block-transform recipe of weights release 2. Each stage keeps a
    checkpoint and its best-so-far weights in --out; the assembled model is rewritten after each.
    """
    from . import pipeline

    if steps is not None and steps < 1:
        raise UsageError("--steps must be at least 1")
    if minutes is not None and minutes <= 0:
        raise UsageError("--minutes must be positive")
    stages = pipeline.RECIPES.get(stage, (stage,))
    res = pipeline.run(data_dir, out, stages=stages, steps=steps, minutes=minutes, batch=batch, crop=crop, lr=lr,
                       resume=resume, seed=seed, threads=threads, max_files=max_files, quiet=as_json,
                       device=device)
    emit(res, as_json, _human)
