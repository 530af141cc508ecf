#!/usr/bin/env python3
"""Where ``archiver migrate`` spends its time, per step (issue 27): a sampling profile.

Not a test: the measurement behind the time budget in docs/operations.md ("Throughput"). It
copies the images into a fresh folder with a fresh ``ARCHIVER_HOME``, runs ``archiver migrate``
(``--dry-run`` too, with ``--mode both``) under py-spy (``pip install py-spy``; it samples the
worker processes as well) and sorts every sample into the step it was taken in: start-up
(imports, model loading), discover, classify (faces, text, texture, ...), the quality search's
encodes, decodes and scores, the decode check, vault copy, catalog, dispose, previews. Profile on
train/ images, never on kodak/ (that is for the final report).

    python bench/profile_migrate.py ../shared/data/train/bsds500/train --count 8 --mode both
    python bench/profile_migrate.py DIR --count 8 --json --out docs/bench/throughput-2026-12-05/profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: a sample belongs to the innermost step frame on its stack
STEPS = {
    "Discover.run": "discover", "Classify.run": "classify", "Encode.run": "search", "Write.run": "write",
    "Check.run": "check", "Vault.run": "vault", "Commit.run": "catalog", "Dispose.run": "dispose",
    "Preview.run": "preview", "recover": "catalog",
}
#: within a step, what the work was: the first entry (in this order) that some frame of the
#: sample's stack inside the step matches: a function name, or a file for the classifiers
PARTS = [
    ("_find_and_load", "imports"), ("get_backbone", "model load"),
    ("faces.py", "faces"), ("text.py", "text (OCR)"), ("texture.py", "texture"), ("evidence.py", "evidence"),
    ("_scores", "score SSIMULACRA2"), ("Ssimulacra2Reference", "score SSIMULACRA2"), ("ms_ssim", "score MS-SSIM"), ("psnr", "score PSNR"),
    ("fingerprint", "score fingerprint"), ("image_digest", "digest"),
    ("QualityProbe.ceiling", "decode diffusion (ceiling)"), ("QualityProbe.decode", "decode diffusion (search probe)"), ("decode_bytes", "decode diffusion"), ("QualityProbe.__init__", "encode diffusion (analysis)"),
    ("QualityProbe.file_at", "encode diffusion (entropy coding)"), ("encode_at", "encode AVIF/JPEG XL"),
    ("PillowLossyCodec.decode", "decode AVIF/JPEG XL"), ("decode", "decode other"),
    ("format.py", "lossless transcode"), ("Session", "catalog"), ("sqlalchemy", "catalog"),
]


def _matches(frame: str, key: str) -> bool:
    name, _, where = frame.partition(" (")
    if key.endswith(".py"):
        return where.startswith(key) or ("/" + key) in where
    if key == "sqlalchemy":
        return "sqlalchemy/" in where
    return name == key or name.endswith("." + key) or name.startswith(key + ".")


def classify_stack(frames: list[str]) -> tuple[str, str]:
    """(step, part) of one sampled stack (frames outermost first, "func (file:line)")."""
    step = None
    idx = -1
    for i, f in enumerate(frames):
        name = f.split(" (")[0]
        if name in STEPS:
            step, idx = STEPS[name], i
    if step is None:
        text = ";".join(frames)
        if "_find_and_load" in text:
            return "start-up", "imports"
        if "get_backbone" in text or "load_tiny" in text:
            return "start-up", "model load"
        if "get_context" in text or "from_config" in text:
            return "start-up", "context (catalog, policy, models)"
        if "run_task" in text or "predict_task" in text or "archive_file" in text:
            return "per file, outside the steps", "lock, recovery, outcome"
        return "driver and idle", "main process"
    inner = frames[idx + 1:]
    for key, part in PARTS:
        if any(_matches(f, key) for f in inner):
            if step == "check" and part.startswith("decode"):
                return step, part + " (read back)"
            return step, part
    return step, "other"


def aggregate(raw: Path) -> dict:
    """Samples per (step, part) from py-spy's raw (collapsed stacks) output."""
    per: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        total += int(n)
        per[classify_stack(frames)] += int(n)
    steps: dict[str, dict] = {}
    for (step, part), n in per.items():
        e = steps.setdefault(step, {"samples": 0, "parts": {}})
        e["samples"] += n
        e["parts"][part] = e["parts"].get(part, 0) + n
    return {"samples": total, "steps": steps}


def run(images: list[Path], dry: bool, rate: int, workers: int, keep: Path | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="profile-migrate-"))
    try:
        photos = work / "photos"
        photos.mkdir()
        for p in images:
            shutil.copy2(p, photos / p.name)
        env = dict(os.environ, ARCHIVER_HOME=str(work / "state"), PYTHONPATH=str(REPO))
        env.pop("ARCHIVER_CONFIG", None)
        raw = work / "profile.txt"
        cmd = ["py-spy", "record", "--subprocesses", "-r", str(rate), "-f", "raw", "-o", str(raw), "--",
               sys.executable, "-m", "archiver", "migrate", str(photos), "--workers", str(workers), "--json"]
        if dry:
            cmd.append("--dry-run")
        load = os.getloadavg()
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"migrate failed ({p.returncode}): {p.stderr[-2000:]}")
        if keep is not None:
            shutil.copy(raw, keep / f"profile-{'dry' if dry else 'real'}.txt")
        agg = aggregate(raw)
        return {"mode": "dry-run" if dry else "real", "images": len(images), "wall_s": round(wall, 2),
                "rate_hz": rate, "loadavg_before": [round(x, 2) for x in load],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()], **agg}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(r: dict) -> str:
    """Per step: its share of the samples and the seconds per image they stand for (samples on
    a CPU, idle waits not sampled; on a loaded machine wall time is longer)."""
    total = max(1, r["samples"])
    per = 1.0 / r["rate_hz"] / max(1, r["images"])
    lines = [f"{r['mode']}: {r['images']} images, {r['wall_s']} s wall under py-spy, "
             f"{r['samples'] / r['rate_hz']:.1f} s sampled on a CPU, load {r['loadavg_before']}",
             f"  {'step':34} {'share':>6}  {'CPU s/image':>11}"]
    for step, e in sorted(r["steps"].items(), key=lambda kv: -kv[1]["samples"]):
        lines.append(f"  {step:34} {e['samples'] / total:6.1%}  {e['samples'] * per:11.2f}")
        for part, n in sorted(e["parts"].items(), key=lambda kv: -kv[1]):
            if n / total >= 0.005:
                lines.append(f"    {part:32} {n / total:6.1%}  {n * per:11.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", type=Path, help="a folder of images (train/, not kodak/)")
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--mode", choices=["real", "dry", "both"], default="both")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", type=Path, help="also write the JSON (and the raw stacks beside it) here")
    a = ap.parse_args(argv)
    if shutil.which("py-spy") is None:
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    exts = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"}
    files = sorted(p for p in a.images.iterdir() if p.suffix.lower() in exts)[:a.count] if a.images.is_dir() else []
    if not files:
        print(f"no images in {a.images}", file=sys.stderr)
        return 2
    keep = a.out.parent if a.out else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    modes = {"real": [False], "dry": [True], "both": [True, False]}[a.mode]
    results = [run(files, dry, a.rate, a.workers, keep) for dry in modes]
    report = {"command": " ".join(["python", "bench/profile_migrate.py", *map(str, argv or sys.argv[1:])]),
              "cpus": os.cpu_count(), "results": results}
    if a.out:
        a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1) if a.json else "\n\n".join(table(r) for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
