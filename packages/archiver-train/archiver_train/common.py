"""Plumbing shared by the training stages: seeding, logging, resumable checkpoints, exports."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    """A seed per (run seed, step): a resumed run draws exactly the data and noise it would have."""
    return (seed * 1_000_003 + step * 7919 + salt) % (2**63 - 1)


class Logger:
    """JSON lines to ``<out>/train.log`` (for programs) and short lines to stderr (for people)."""

    def __init__(self, out: Path, quiet: bool = False):
        self.path = Path(out) / "train.log"
        self.quiet = quiet

    def log(self, **rec) -> None:
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **rec}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if not self.quiet:
            parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items() if k != "time"]
            print(" ".join(parts), file=sys.stderr, flush=True)


def save_checkpoint(path: Path, **state) -> None:
    """Atomic (temp + rename) so a kill during saving never leaves a broken checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def save_safetensors(path: Path, tensors: dict, metadata: dict) -> None:
    """Safetensors with every metadata value as a string (JSON for structures), written atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_suffix(".tmp")
    meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()}
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return load_file(str(path)), out


def cosine_lr(base: float, progress: float, warmup: float = 0.02, floor: float = 0.05) -> float:
    import math

    if progress < warmup:
        return base * max(progress / warmup, 0.05)
    p = min(1.0, (progress - warmup) / max(1e-9, 1 - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """Exponential moving average of the trainable weights, with a short warm-up (the first
    steps would otherwise be dominated by the random start)."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, p in zip(ema.parameters(), model.parameters()):
        if p.requires_grad:
            pe.lerp_(p, 1 - d)


def standalone(command, prog_name: str) -> None:
    """Run a ``python -m archiver_train.<tool>`` click command the way ``archiver`` runs its
    own: a user error is one line on stderr (JSON too with --json) and its exit code."""
    import click

    from archiver.errors import ArchiverError
    from archiver.text import report_error

    try:
        command.main(prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (ArchiverError, KeyboardInterrupt) as e:
        sys.exit(report_error(e, prog_name, "--json" in sys.argv, click.echo))
