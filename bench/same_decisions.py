#!/usr/bin/env python3
"""Do two checkouts of archiver decide the same for the same images? (issue 27: speed changes
must not change the perceptual gate's outcomes.)

Runs ``archiver migrate FOLDER --dry-run --json`` with each checkout (``PYTHONPATH``), on a copy
of the first N images, and compares per file the rule, the codec, the predicted bytes and each
candidate's knob and size (with ``--passing-only``, only the candidates that reached the target:
for a change that ends losing searches sooner). Exit 0 when everything matches, 1 with the
differences listed.

    python bench/same_decisions.py ../shared/data/train/imagenet-sample --count 6 --before /work/main
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}


def predict(repo: Path, photos: Path, home: Path, passing_only: bool = False) -> dict[str, dict]:
    env = dict(os.environ, PYTHONPATH=str(repo), ARCHIVER_HOME=str(home))
    env.pop("ARCHIVER_CONFIG", None)
    p = subprocess.run([sys.executable, "-m", "archiver", "migrate", str(photos), "--dry-run", "--json"],
                       env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{repo}: dry run failed ({p.returncode}): {p.stderr[-2000:]}")
    out = {}
    for f in json.loads(p.stdout)["predictions"]:
        cands = [(a.get("codec"), a.get("ok"), a.get("size"), (a.get("knob") or {}).get("quality"))
                 for a in f.get("attempts") or [] if a.get("ok") or not passing_only]
        out[Path(f["path"]).name] = {"rule": f["rule"], "codec": f["codec"], "bytes_after": f["bytes_after"],
                                     "candidates": cands}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", type=Path)
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--before", type=Path, required=True, help="the other checkout (e.g. main's worktree)")
    ap.add_argument("--passing-only", action="store_true",
                    help="compare only the candidates that reached the target (and the stored file)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    files = sorted(p for p in a.images.iterdir() if p.suffix.lower() in EXTS)[:a.count]
    work = Path(tempfile.mkdtemp(prefix="same-decisions-"))
    try:
        photos = work / "photos"
        photos.mkdir()
        for f in files:
            shutil.copy2(f, photos / f.name)
        before = predict(a.before, photos, work / "before", a.passing_only)
        after = predict(REPO, photos, work / "after", a.passing_only)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    diffs = [{"file": k, "before": before.get(k), "after": after.get(k)}
             for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    report = {"images": len(files), "folder": str(a.images), "before": str(a.before), "after": str(REPO),
              "same": not diffs, "differences": diffs, "files": after}
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        for k, v in sorted(after.items()):
            print(f"{k:28} {v['rule']:16} {v['codec']:10} {v['bytes_after']:>9} B  {'same' if before.get(k) == v else 'DIFFERENT'}")
        print(f"{len(files)} images: {'the same decisions and bytes' if not diffs else f'{len(diffs)} differ'}")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
