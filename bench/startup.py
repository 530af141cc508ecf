#!/usr/bin/env python3
"""Start-up cost of the commands people run one file at a time (issue 13, "Fast start-up").

Not a test: a measurement to quote in docs/operations.md ("Start-up time"). Each case runs as a
fresh ``python -m archiver ...`` process, ``--repeat`` times (default 3); the table gives the
median CPU seconds (user + sys of the process and its children, from ``os.wait4``) and the
median wall seconds. On a shared machine CPU seconds are the fairer figure: wall time grows with
the load average, which is printed with the results.

Cases (a 481x321 image, like the one in the issue; ``--image`` to use another):
  help            archiver --help
  status          archiver status (a catalog with one file; status never creates one)
  restore-lossless  archiver restore of a PNG and a JPEG archived losslessly (.axl, .jxl), the
                  vault emptied so that both are decoded from the compressed files
  decode-dlc      archiver decode of a .dlc made with the embedded default model (tiny)
  import-torch    python -c "import torch": the floor under any .dlc decode

    python bench/startup.py                      # all cases, table
    python bench/startup.py --json --repeat 5 decode-dlc import-torch
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZE = (481, 321)


def make_image(path: Path) -> None:
    """A deterministic photo-like test image (smooth gradients plus texture), 481x321."""
    import numpy as np
    from PIL import Image

    w, h = SIZE
    rng = np.random.default_rng(13)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / 57 + c) * np.cos(yy / 43 - c) for c in (0, 1, 2)], axis=-1)
    noise = rng.normal(0, 18, (h, w, 3)).astype(np.float32)
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)


def run(argv: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one process run to completion; fails loudly on an error."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if p.returncode != 0:
        raise SystemExit(f"bench/startup.py: {' '.join(argv)} failed (exit {p.returncode}): {err.strip()[-500:]}")
    return ru.ru_utime + ru.ru_stime, wall


def _prepare(argv: list[str], env: dict, cwd: Path) -> None:
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench/startup.py: {' '.join(argv)} failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")


CASES = ("help", "status", "restore-lossless", "decode-dlc", "import-torch")


def setup(work: Path, image: Path | None, env: dict, cases) -> dict[str, list[str]]:
    """Prepare the inputs ``cases`` need (not timed) and return case name -> argv."""
    arch = [sys.executable, "-m", "archiver"]
    src, photos = work / "a.png", work / "photos"
    if {"decode-dlc", "restore-lossless"} & set(cases):
        if image:
            shutil.copyfile(image, src)
        else:
            make_image(src)
    if "status" in cases:  # a catalog to look at: only archive, migrate and the daemon create one
        (work / "seed").mkdir()
        make_image(work / "seed" / "s.png")
        _prepare([*arch, "archive", "--policy", "evidence", str(work / "seed")], env, work)
    if "decode-dlc" in cases:
        _prepare([*arch, "encode", str(src), str(work / "a.dlc")], env, work)
    if "restore-lossless" in cases:
        from PIL import Image

        photos.mkdir()
        shutil.copyfile(src, photos / "p.png")
        Image.open(src).convert("RGB").save(photos / "j.jpg", quality=90)
        _prepare([*arch, "archive", "--policy", "evidence", str(photos)], env, work)
    return {
        "help": [*arch, "--help"],
        "status": [*arch, "status"],
        "restore-lossless": [*arch, "restore", str(photos / "p.png"), str(photos / "j.jpg")],
        "decode-dlc": [*arch, "decode", "--force", str(work / "a.dlc"), str(work / "out.png")],
        "import-torch": [sys.executable, "-c", "import torch"],
    }


def reset_restore(work: Path) -> None:
    """Originals gone and the vault emptied: the restore must decode the .axl and .jxl."""
    for p in [work / "photos" / "p.png", work / "photos" / "j.jpg", *(work / "home" / "vault").rglob("*")]:
        if p.is_file():
            p.unlink()


def _commit(repo: Path) -> str | None:
    r = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (r.stdout.strip() + ("+changes" if dirty else "")) if r.returncode == 0 else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", help="cases to run (default: all)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported")
    ap.add_argument("--image", type=Path, default=None, help="image to encode (default: a generated 481x321)")
    ap.add_argument("--repo", type=Path, default=REPO,
                    help="archiver checkout to measure (default: this one), e.g. another worktree for a before/after")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="archiver-startup-") as tmp:
        work = Path(tmp)
        home = work / "home"
        env = dict(os.environ, ARCHIVER_HOME=str(home), PYTHONPATH=str(args.repo.resolve()))
        env.pop("ARCHIVER_CONFIG", None)
        names = args.cases or list(CASES)
        unknown = [n for n in names if n not in CASES]
        if unknown:
            ap.error(f"unknown case(s) {', '.join(unknown)} (known: {', '.join(CASES)})")
        cases = setup(work, args.image, env, names)
        load_before = os.getloadavg()
        results = []
        for name in names:
            cpu, wall = [], []
            for _ in range(args.repeat):
                if name == "restore-lossless":
                    reset_restore(work)
                c, w = run(cases[name], env, work)
                if name == "restore-lossless" and not all((work / "photos" / n).is_file() for n in ("p.png", "j.jpg")):
                    raise SystemExit("bench/startup.py: the restore did not write both files")
                cpu.append(c)
                wall.append(w)
            results.append({"case": name, "cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall),
                            "cpu_runs": [round(c, 3) for c in cpu], "wall_runs": [round(w, 3) for w in wall]})
        report = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
                  "repo": str(args.repo.resolve()), "commit": _commit(args.repo),
                  "cpus": os.cpu_count(), "python": platform.python_version(), "repeat": args.repeat,
                  "loadavg_before": [round(x, 2) for x in load_before],
                  "loadavg_after": [round(x, 2) for x in os.getloadavg()], "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['repo']} ({report['commit']})")
        print(f"{report['when']}  {report['cpus']} CPUs  load average {report['loadavg_before'][0]:.1f} -> "
              f"{report['loadavg_after'][0]:.1f}  (median of {args.repeat})")
        print(f"{'case':<18} {'CPU s':>7} {'wall s':>7}   CPU s per run")
        for r in results:
            print(f"{r['case']:<18} {r['cpu_s']:7.2f} {r['wall_s']:7.2f}   {' '.join(f'{c:.2f}' for c in r['cpu_runs'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
