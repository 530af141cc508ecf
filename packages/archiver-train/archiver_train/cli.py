"""``archiver train``: the embedded tiny backbone's learned parts (``archiver train DATA_DIR``, as
before) and adapters for diffusers models (``archiver train adapter``), resumably."""

from __future__ import annotations

from pathlib import Path

import click

from archiver.errors import UsageError
from archiver.text import emit

STAGES = ("rd", "denoiser", "realism", "fidelity", "rd-tune", "ae", "entropy", "codec")


class _TrainGroup(click.Group):
    """``archiver train DATA_DIR ...`` keeps meaning the tiny model; ``archiver train adapter ...``
    trains an adapter. Anything that is not a subcommand name goes to ``tiny``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["tiny", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_TrainGroup)
def train():
    """Train the embedded tiny backbone (``archiver train DATA_DIR``) or an adapter for a
    diffusers model (``archiver train adapter --model DIR DATA_DIR``)."""


def _human(res: dict) -> str:
    lines = []
    for r in res["stages"]:
        keys = [k for k in ("step", "loss", "val_psnr", "best_val_psnr", "val_loss", "best_val_loss", "val_bpp", "pixels", "seconds") if k in r]
        lines.append(f"{r['stage']:9s} " + "  ".join(f"{k}={r[k]:.4g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys))
    if res.get("exported"):
        lines.append(f"model written to {res['exported']}")
    return "\n".join(lines)


@train.command("tiny")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("checkpoints/tiny"), show_default=True,
              help="checkpoints, logs and the assembled model (tiny.safetensors + tiny.json)")
@click.option("--stage", type=click.Choice(STAGES + ("all", "tune", "release2")), default="all", show_default=True,
              help="one stage, 'all' (release 3: rd, denoiser, realism), 'tune' (rd-tune, fidelity: with --init) "
                   "or 'release2' (ae, denoiser, entropy, codec)")
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
@click.option("--amp/--no-amp", default=True, show_default=True,
              help="bfloat16 autocast for the convolutions on CUDA (entropy models always float32)")
@click.option("--max-files", type=int, default=None, help="use only the first N images (for quick tries)")
@click.option("--init", "init", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="start from this assembled model (e.g. archiver/weights): its stage files seed --out")
@click.option("--eval-every", type=int, default=None, help="steps between held-out evaluations (default: per-stage)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
def tiny(data_dir, out, stage, steps, minutes, batch, crop, lr, resume, seed, threads, device, amp, max_files,
         init, eval_every, as_json):
    """Train the embedded tiny backbone on the images in DATA_DIR (never on the evaluation set).

    Release 3 (the default, `--stage all`): the autoencoder and its entropy model trained
    jointly on rate + distortion (rd), the latent denoiser on cached latents (denoiser), then
    the decoder and denoiser fine-tuned for realism on the codec's decode path (realism).
    `--stage fidelity --init archiver/weights` fine-tunes a shipped model's decoder and denoiser
    for MS-SSIM and MSE at the decode's shipped starting step; files' bytes do not change.
    `--stage tune --init archiver/weights` first fine-tunes the encoder, entropy model and
    decoder on rate + a distortion half MSE, half MS-SSIM (rd-tune), then runs fidelity.
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
                       device=device, amp=amp, init=init, **({"eval_every": eval_every} if eval_every else {}))
    emit(res, as_json, _human)


def _human_adapter(r: dict) -> str:
    return "\n".join([
        f"adapter   step={r['step']}  val_bpp={r['val_bpp']:.4g} (generic model {r['generic_val_bpp']:.4g})  "
        f"saving={r['saving']:.1%} (mean over the validation rates)  {r['seconds']:.4g} s on {r['device']}",
        f"adapter written to {r['adapter']} (sha256 {r['sha256'][:16]}...)",
        f"use it: `adapter: {r['adapter']}` in the config, or --adapter {r['adapter']}",
    ])


@train.command("adapter")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--backbone", "backbone_name", type=click.Choice(["diffusers"]), default="diffusers", show_default=True)
@click.option("--model", type=str, default=None,
              help="diffusers model folder or cached repo id (default: diffusers_model from the config)")
@click.option("--device", type=str, default="auto", show_default=True, help="cpu, cuda, cuda:N or auto")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="adapter folder (default: <model folder>.adapter, beside the model)")
@click.option("--steps", type=int, default=None, help="optimizer steps (default 20000)")
@click.option("--minutes", type=float, default=None, help="wall-clock budget (stops at steps or time)")
@click.option("--batch", type=int, default=None, help="latent crops per step (default 16)")
@click.option("--crop", type=int, default=None, help="training crop side in pixels (default 256)")
@click.option("--lr", type=float, default=None, help="learning rate (default 1e-3, cosine)")
@click.option("--max-side", type=int, default=None, help="images are cropped to this many pixels a side first (default 1024)")
@click.option("--eval-every", type=int, default=None, help="steps between validations (default 200)")
@click.option("--resume", is_flag=True, help="continue from the checkpoint in <out>/training")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads")
@click.option("--max-files", type=int, default=None, help="use only the first N images (for quick tries)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
def adapter(data_dir, backbone_name, model, device, out, steps, minutes, batch, crop, lr, max_side, eval_every,
            resume, seed, threads, max_files, as_json):
    """Train an adapter (entropy model and quantization steps) for a frozen diffusers model on the
    images in DATA_DIR; the model itself is never changed. See docs/stable-diffusion.md."""
    from archiver.config import load_config
    from .adapter import DEFAULTS, train_adapter

    model = model or load_config().diffusers_model
    if not model:
        raise UsageError("give the model: --model DIR (or diffusers_model in the config)")
    opts = {"steps": steps, "batch": batch, "crop": crop, "lr": lr, "max_side": max_side, "eval_every": eval_every}
    kw = {k: (DEFAULTS[k] if v is None else v) for k, v in opts.items()}
    res = train_adapter(data_dir, model=model, backbone_name=backbone_name, device=device, out=out,
                        minutes=minutes, seed=seed, resume=resume, max_files=max_files, threads=threads,
                        quiet=as_json, **kw)
    emit(res, as_json, _human_adapter)
