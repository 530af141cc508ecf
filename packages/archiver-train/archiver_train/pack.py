"""A training-data pack small enough to travel to a GPU machine with the repository.

The device tool sends at most 64 MiB per call (repository, carried data and wheels together),
and the training folder is ~160 MB. The pack copies files byte for byte (no re-encoding) under
their relative paths, in this order until ``--max-mb``:

1. the validation images (``data.holdout``: chosen by name hash among all of DATA_DIR's images,
   so a run on the pack validates on exactly the images every other run validates on);
2. the ``--first`` folders (default: BSDS500 train + val, the issue's reference recipe);
3. the rest of DATA_DIR, by name hash (a spread over every source, not the first folder).

``python -m archiver_train.pack DATA_DIR OUT_DIR [--max-mb 26] [--first bsds500/train ...] [--json]``
``--validation-only`` copies just the validation images, flat (``bsds500__test__100007.jpg``):
a folder to run ``archiver bench`` on (the release decision is made there, never on Kodak).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import click

from archiver.errors import UsageError
from archiver.text import emit

DEFAULT_FIRST = ("bsds500/train", "bsds500/val")


def plan(data_dir: Path, max_bytes: int, first=DEFAULT_FIRST, validation_only: bool = False) -> dict:
    """The relative paths to copy, in order, and what they hold."""
    from . import data as D
    from . import rd as RD

    root = Path(data_dir)
    imgs = D.load_set(root, min_side=1)
    _, val_ids = D.holdout(imgs, RD.N_VAL, RD.VAL_SIDE)
    val = [imgs.names[i] for i in val_ids]
    names = [p.relative_to(root).as_posix() for p in D.list_images(root)]
    key = lambda n: hashlib.sha256(n.encode()).hexdigest()  # noqa: E731
    firsts = [n for f in first for n in names if n.startswith(f.rstrip("/") + "/")]
    rest = sorted((n for n in names if n not in set(firsts)), key=key)
    if validation_only:
        firsts, rest = [], []
    chosen, total = [], 0
    for n in dict.fromkeys(val + firsts + rest):  # ordered, without repeats
        size = (root / n).stat().st_size
        if total + size > max_bytes:
            if n in val:
                raise UsageError(f"--max-mb is too small even for the {len(val)} validation images")
            continue
        chosen.append(n)
        total += size
    return {"files": chosen, "bytes": total, "validation": val, "of": len(names)}


@click.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--max-mb", type=float, default=26.0, show_default=True)
@click.option("--first", multiple=True, default=DEFAULT_FIRST, show_default=True,
              help="folders (relative to DATA_DIR) taken whole before the rest")
@click.option("--validation-only", is_flag=True, help="copy only the held-out validation images")
@click.option("--json", "as_json", is_flag=True)
def main(data_dir, out_dir, max_mb, first, validation_only, as_json):
    """Copy a size-limited training pack of DATA_DIR into OUT_DIR (see the module docs)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out}: not empty (remove it first; the pack is rebuilt whole)")
    p = plan(data_dir, int(max_mb * 1e6), first, validation_only)
    for n in p["files"]:
        dst = out / (n.replace("/", "__") if validation_only else n)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(data_dir) / n, dst)
    res = {"out": str(out), "files": len(p["files"]), "of": p["of"], "mb": round(p["bytes"] / 1e6, 2),
           "validation": len(p["validation"])}
    emit(res, as_json, lambda r: f"{r['files']} of {r['of']} images ({r['mb']} MB, {r['validation']} of them "
                                 f"held out for validation) copied to {r['out']}")


if __name__ == "__main__":  # pragma: no cover
    from .common import standalone

    standalone(main, "python -m archiver_train.pack")
