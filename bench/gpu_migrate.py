#!/usr/bin/env python3
"""``archiver migrate`` on its batched device path over N images (issue 27, "A GPU when there is one").

Not a test: the measurement for a GPU machine. It makes N distinct images from the given
folders (cycled; each copy differs from the others by one pixel's lowest bit, so that no copy is
an exact duplicate the run would share instead of encode), then runs

    archiver migrate ROOT --json --device DEVICE --batch B --workers W [--dry-run]

in a fresh state directory and keeps: wall and CPU seconds, images/s, the batches (count, mean
and largest size, per kind of work), the device thread's busy share, the GPU utilisation migrate
sampled, and the codec shares. ``--compare`` runs the normal path too (worker processes, no
batching) on a fresh copy and checks that every file got the same rule, codec and bytes.

    python bench/gpu_migrate.py ../shared/data/kodak --count 500 --device cuda --batch 16 --workers 16 --out gpu.json
    python bench/gpu_migrate.py ../shared/data/train/bsds500/train --count 8 --device cpu --batch 4 --workers 2 --compare
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}


def make_images(folders: list[Path], count: int, dest: Path) -> int:
    """``count`` distinct PNGs in ``dest`` from the folders' images (cycled); returns the pixels."""
    files = sorted(p for d in folders for p in d.iterdir() if p.suffix.lower() in EXTS)
    if not files:
        raise SystemExit(f"no images in {', '.join(map(str, folders))}")
    dest.mkdir(parents=True)
    pixels = 0
    for i in range(count):
        src = files[i % len(files)]
        a = np.array(Image.open(src).convert("RGB"))
        k = i // len(files)
        if k:  # the k-th copy: one pixel's lowest bits carry k (invisible, but not an exact copy)
            a[0, 0] = (a[0, 0] & 0xF0) | np.array([k & 15, (k >> 4) & 15, (k >> 8) & 15], dtype=np.uint8)
        Image.fromarray(a).save(dest / f"{i:05d}-{src.stem}.png", compress_level=1)
        pixels += a.shape[0] * a.shape[1]
    return pixels


def run_migrate(images: Path, work: Path, args: list[str], *, device: str, workers: int, policy: str | None,
                dry_run: bool) -> dict:
    """``archiver migrate`` on a fresh copy of ``images`` with a fresh state: its report, timed."""
    root, home = work / "root", work / "home"
    shutil.copytree(images, root)
    home.mkdir()
    config = work / "config.yaml"
    lines = [f"device: {device}", f"workers: {workers}"] + ([f"policy: {policy}"] if policy else [])
    config.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, ARCHIVER_HOME=str(home), ARCHIVER_CONFIG=str(config), PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "archiver", "migrate", str(root), "--json", *args] + (["--dry-run"] if dry_run else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    rep = json.loads(r.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rows = rep["predictions"] if dry_run else rep["outcomes"]
    files = {Path(x["path"]).name: (x.get("rule"), x.get("codec") or x.get("action"), x.get("bytes_after"))
             for x in rows}
    return {"argv": argv[3:], "exit_code": r.returncode, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "files": rep["files"], "images_per_s": round(rep["files"] / wall, 3) if wall > 0 else None,
            "batching": rep.get("batching"), "codecs": rep.get("codecs"), "per_file": files}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--count", type=int, default=500, help="images (the folders are cycled to reach it)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16, help="migrate --batch (files whose device work one batch holds)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="files in flight (threads)")
    ap.add_argument("--policy", help="policy file or shipped name (default: the shipped default)")
    ap.add_argument("--dry-run", action="store_true", help="time the dry run instead of the real run")
    ap.add_argument("--compare", action="store_true",
                    help="also run the normal path (worker processes, no batching) and compare every file")
    ap.add_argument("--out", type=Path, help="write the JSON report here (else stdout)")
    a = ap.parse_args(argv)
    if a.count < 1 or a.batch < 1 or a.workers < 1:
        ap.error("--count, --batch and --workers must be at least 1")
    with tempfile.TemporaryDirectory(prefix="gpu-migrate-") as tmp:
        tmp = Path(tmp)
        pixels = make_images(a.folders, a.count, tmp / "images")
        common = dict(device=a.device, workers=a.workers, policy=a.policy, dry_run=a.dry_run)
        batched = run_migrate(tmp / "images", tmp / "batched", ["--batch", str(a.batch)], **common)
        report = {"images": a.count, "megapixels_mean": round(pixels / a.count / 1e6, 3), "device": a.device,
                  "batch": a.batch, "workers": a.workers, "dry_run": a.dry_run,
                  "batched": {k: v for k, v in batched.items() if k != "per_file"}}
        if a.compare:
            normal = run_migrate(tmp / "images", tmp / "normal", ["--batch", "0", "--executor", "process"], **common)
            differ = sorted(k for k in batched["per_file"] if batched["per_file"][k] != normal["per_file"].get(k))
            report["normal"] = {k: v for k, v in normal.items() if k != "per_file"}
            report["same_decisions"] = not differ and len(batched["per_file"]) == len(normal["per_file"])
            report["differing_files"] = differ[:20]
            if normal["wall_s"]:
                report["speedup_wall"] = round(normal["wall_s"] / batched["wall_s"], 3)
    text = json.dumps(report, indent=1)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)
    return 0 if report.get("same_decisions", True) else 1


if __name__ == "__main__":
    sys.exit(main())
