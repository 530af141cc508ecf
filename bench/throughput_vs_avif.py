#!/usr/bin/env python3
"""``archiver migrate`` (and its dry run) against a plain Pillow AVIF pass over the same folder,
and the wall time of the commands people run one at a time (issue 27, "Done when").

Not a test: the measurement quoted in docs/operations.md ("Throughput"). Each repeat runs, in
a rotating order so that a change in the machine's load hits every contender alike:
  avif      a fresh ``python`` that writes every image as AVIF quality 60 with Pillow
  dry-run   ``archiver migrate FOLDER --dry-run`` (fresh ARCHIVER_HOME)
  migrate   ``archiver migrate FOLDER`` on a fresh copy (fresh ARCHIVER_HOME): the real run,
            quality search included
then, on the last real run's catalog: ``archiver --help``, ``show FILE``, ``ls``, ``status``,
``verify`` (every file), and ``decode`` of one .dlc made from the first image. Every run is a
fresh process; wall seconds and CPU seconds (user + sys of the process and its children, from
``os.wait4``) are kept per run, with min and median, and the load average around each run.

    python bench/throughput_vs_avif.py ../shared/data/kodak --repeat 3 --out docs/bench/throughput-2026-12-05/kodak.json
    python bench/throughput_vs_avif.py ../shared/data/train/bsds500/train --count 8 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}

AVIF = r"""
import sys
from pathlib import Path
from PIL import Image
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for p in sorted(src.iterdir()):
    with Image.open(p) as im:
        im.convert("RGB").save(dst / (p.name + ".avif"), "AVIF", quality=60)
"""


def run(argv: list[str], env: dict, cwd: Path, ok=(0,)) -> dict:
    """One process run to completion: wall seconds, CPU seconds from ``os.wait4`` (the process
    and every child it waited for), the load average before and after; exits on a failure."""
    load = os.getloadavg()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    bufs = {}

    def drain(name, stream):
        bufs[name] = stream.read()

    threads = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", p.stdout), ("err", p.stderr))]
    for t in threads:
        t.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    for t in threads:
        t.join()
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc
    if rc not in ok:
        sys.exit(f"{' '.join(map(str, argv))} failed ({rc}):\n{bufs['err'].decode(errors='replace')[-3000:]}")
    return {"wall_s": round(wall, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "rc": rc,
            "load_before": round(load[0], 2), "load_after": round(os.getloadavg()[0], 2),
            "stdout": bufs["out"].decode(errors="replace")}


def stats(runs: list[dict]) -> dict:
    walls, cpus = [r["wall_s"] for r in runs], [r["cpu_s"] for r in runs]
    return {"wall_min": min(walls), "wall_median": round(statistics.median(walls), 3),
            "cpu_min": min(cpus), "cpu_median": round(statistics.median(cpus), 3),
            "runs": [{k: v for k, v in r.items() if k != "stdout"} for r in runs]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", type=lambda p: Path(p).resolve())  # the commands run in a scratch folder
    ap.add_argument("--count", type=int, default=0, help="the first N images (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="migrate --workers (default: the config's)")
    ap.add_argument("--out", type=Path, help="write the JSON report here")
    ap.add_argument("--no-commands", action="store_true", help="only the folder runs")
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout to measure (default: this one)")
    a = ap.parse_args(argv)
    files = sorted(p for p in a.images.iterdir() if p.suffix.lower() in EXTS) if a.images.is_dir() else []
    if a.count:
        files = files[:a.count]
    if not files:
        print(f"no images in {a.images}", file=sys.stderr)
        return 2
    py = sys.executable
    base = dict(os.environ, PYTHONPATH=str(a.repo), PYTHONUNBUFFERED="1")
    base.pop("ARCHIVER_CONFIG", None)
    work = Path(tempfile.mkdtemp(prefix="throughput-"))
    extra = ["--workers", str(a.workers)] if a.workers else []
    runs: dict[str, list[dict]] = {"avif": [], "dry-run": [], "migrate": []}
    order = ["avif", "dry-run", "migrate"]
    last_home = last_photos = None
    try:
        for r in range(a.repeat):
            for name in order[r % 3:] + order[:r % 3]:  # rotate: each goes first once in three
                d = work / f"{name}-{r}"
                photos, home = d / "photos", d / "state"
                photos.mkdir(parents=True)
                for f in files:
                    shutil.copy2(f, photos / f.name)
                env = dict(base, ARCHIVER_HOME=str(home))
                if name == "avif":
                    out = d / "avif"
                    out.mkdir()
                    res = run([py, "-c", AVIF, str(photos), str(out)], env, d)
                    res["bytes_after"] = sum(p.stat().st_size for p in out.iterdir())
                else:
                    cmd = [py, "-m", "archiver", "migrate", str(photos), "--json", *extra]
                    if name == "dry-run":
                        cmd.append("--dry-run")
                    res = run(cmd, env, d)
                    rep = json.loads(res["stdout"])
                    res["codecs"] = rep.get("codecs")
                    res["bytes_after"] = rep.get("bytes_after", rep.get("bytes_after_predicted"))
                    if name == "migrate":
                        last_home, last_photos = home, photos
                runs[name].append(res)
                print(f"repeat {r + 1}/{a.repeat} {name:8} wall {res['wall_s']:7.2f} s  cpu {res['cpu_s']:7.2f} s  "
                      f"load {res['load_before']}", file=sys.stderr)
        report = {"images": len(files), "folder": str(a.images), "repeat": a.repeat, "cpus": os.cpu_count(),
                  "repo": str(a.repo), "command": " ".join(["python", "bench/throughput_vs_avif.py", *(argv or sys.argv[1:])]),
                  "platform": platform.platform(), "python": platform.python_version(),
                  "folder_runs": {k: stats(v) for k, v in runs.items()}}
        fr = report["folder_runs"]
        report["ratios"] = {
            "migrate_over_avif_wall_min": round(fr["migrate"]["wall_min"] / fr["avif"]["wall_min"], 2),
            "migrate_over_avif_wall_median": round(fr["migrate"]["wall_median"] / fr["avif"]["wall_median"], 2),
            "migrate_over_avif_cpu_median": round(fr["migrate"]["cpu_median"] / fr["avif"]["cpu_median"], 2),
            "dry_over_real_wall_median": round(fr["dry-run"]["wall_median"] / fr["migrate"]["wall_median"], 2),
            "dry_over_real_cpu_median": round(fr["dry-run"]["cpu_median"] / fr["migrate"]["cpu_median"], 2),
        }
        if not a.no_commands:
            env = dict(base, ARCHIVER_HOME=str(last_home))
            shown = str(last_photos / files[0].name)
            dlc = work / "one.dlc"
            run([py, "-m", "archiver", "encode", str(files[0]), str(dlc)], env, work)
            cmds = {"help": ["--help"], "show": ["show", shown], "ls": ["ls"], "status": ["status"],
                    "verify": ["verify"], "decode": ["decode", str(dlc), str(work / "one.png")]}
            report["commands"] = {}
            for name, args in cmds.items():
                rs = []
                for _ in range(a.repeat):
                    (work / "one.png").unlink(missing_ok=True)
                    rs.append(run([py, "-m", "archiver", *args], env, work))
                report["commands"][name] = stats(rs)
                print(f"{name:8} wall min {report['commands'][name]['wall_min']:.2f} s  median "
                      f"{report['commands'][name]['wall_median']:.2f} s  cpu median "
                      f"{report['commands'][name]['cpu_median']:.2f} s", file=sys.stderr)
            report["commands"]["verify"]["files"] = len(files)
        report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=1)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
