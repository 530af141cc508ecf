"""Disk footprint of an installed venv, per distribution, for docs/bench/install-*.json.

    python bench/install_footprint.py --venv before=/tmp/venv-before --time before=before.time \\
        --command before="pip install ..." --venv after=/tmp/venv-after ... --out docs/bench/install-DATE.json

``--time`` takes the stderr of ``/usr/bin/time -v`` around one install (wall, user and system
seconds); give it once per repeated install of the same command. Sizes are apparent file sizes summed per distribution from its RECORD (so three OpenCV
builds writing the same ``cv2/`` files each count what they wrote), and the whole venv as
``du -sm`` sees it.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
from pathlib import Path


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def per_distribution(venv: Path) -> dict[str, float]:
    """MB per distribution (name==version), from the files its RECORD lists."""
    sp = site_packages(venv)
    out = {}
    for rec in sp.glob("*.dist-info/RECORD"):
        meta = (rec.parent / "METADATA").read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", meta, re.M).group(1).strip()
        version = re.search(r"^Version: (.+)$", meta, re.M).group(1).strip()
        total = 0
        with rec.open(newline="") as f:
            for row in csv.reader(f):
                if len(row) >= 3 and row[2].isdigit():
                    total += int(row[2])
        out[f"{name}=={version}"] = round(total / 2**20, 1)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def du_mb(path: Path) -> int:
    return int(subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def parse_time(text: str) -> dict:
    """Wall, user and system seconds from ``/usr/bin/time -v`` output."""
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    return {
        "wall_s": round(secs, 1),
        "user_s": float(re.search(r"User time \(seconds\): ([\d.]+)", text).group(1)),
        "system_s": float(re.search(r"System time \(seconds\): ([\d.]+)", text).group(1)),
    }


def pairs(items: list[str]) -> dict[str, str]:
    return dict(i.split("=", 1) for i in items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", action="append", default=[], help="LABEL=PATH")
    ap.add_argument("--time", action="append", default=[], help="LABEL=FILE (/usr/bin/time -v stderr)")
    ap.add_argument("--command", action="append", default=[], help="LABEL=the install command measured")
    ap.add_argument("--note", default="")
    ap.add_argument("--top", type=int, default=25, help="largest distributions listed per venv")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    commands = pairs(a.command)
    times: dict[str, list[str]] = {}
    for item in a.time:
        label, path = item.split("=", 1)
        times.setdefault(label, []).append(path)
    result = {"note": a.note, "venvs": {}}
    for label, path in pairs(a.venv).items():
        dists = per_distribution(Path(path))
        entry = {
            "command": commands.get(label),
            "du_mb": du_mb(Path(path)),
            "distributions": len(dists),
            "cuda_and_triton_mb": round(sum(v for k, v in dists.items() if k.startswith(("nvidia", "triton"))), 1),
            "largest_mb": dict(list(dists.items())[: a.top]),
            "all": sorted(dists),
        }
        entry["installs"] = [parse_time(Path(t).read_text()) for t in times.get(label, [])]
        result["venvs"][label] = entry
        walls = ", ".join(f"{i['wall_s']} s" for i in entry["installs"])
        print(f"{label}: {entry['du_mb']} MB, {len(dists)} distributions" + (f", install wall {walls}" if walls else ""))
    text = json.dumps(result, indent=1) + "\n"
    if a.out:
        a.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
