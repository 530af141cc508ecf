#!/usr/bin/env python3
"""Throughput and peak memory of ``archiver migrate`` and ``archiver daemon`` on this machine.

Not a test: a measurement to quote in docs/operations.md. It copies N images (default: BSDS500
from ../shared/data/train) into fresh temporary roots, each run with its own ARCHIVER_HOME
(catalog, vault), and reports images/min, seconds per image, the largest process's peak RSS
(``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a wrapper that runs only that command) and the
peak total RSS of the whole process tree (sampled with psutil when available).

    python bench/throughput.py --count 24 --workers 1 2 --mode both
    python bench/throughput.py --images DIR --policy evidence --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = [REPO.parent / "shared" / "data" / "train" / "bsds500" / "train",
                  Path("/work/shared/data/train/bsds500/train")]

# runs one command and reports the peak RSS of its largest process (children are waited for)
_WRAPPER = r"""
import json, resource, subprocess, sys, time
t0 = time.time()
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True)  # stderr: inherited (the log)
print(json.dumps({"rc": p.returncode, "seconds": time.time() - t0, "stdout": p.stdout,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


class TreeSampler:
    """Peak total RSS of a process and all its descendants, sampled every 0.2 s."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        try:
            import psutil  # noqa: F401
            self.ok = True
        except ImportError:
            self.ok = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        if not self.ok:
            return
        import psutil

        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root] + root.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            time.sleep(0.2)

    def stop(self) -> int | None:
        self._stop.set()
        self.t.join(2)
        return self.peak if self.ok else None


def _images(src: Path, count: int) -> list[Path]:
    exts = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in exts)
    if not files:
        sys.exit(f"no images under {src}")
    return [files[i % len(files)] for i in range(count)]


def _copy(files: list[Path], dst: Path) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    total = 0
    for i, f in enumerate(files):
        out = dst / f"{i:04d}-{f.name}"
        shutil.copy2(f, out)
        total += out.stat().st_size
    return total


def _env(home: Path, config: Path) -> dict:
    env = dict(os.environ, ARCHIVER_HOME=str(home), ARCHIVER_CONFIG=str(config), PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    return env


def _config(path: Path, **kw) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({k: v for k, v in kw.items() if v is not None}))
    return path


EXTRA: dict = {}  # config settings from the command line (backbone weights)


def random_tiny_weights(d: Path) -> Path:
    """Untrained tiny weights in the shipped layout: the same compute as the real model, for
    timing when no trained weights are installed (quality is meaningless: use a zero floor)."""
    import torch
    from safetensors.torch import save_file

    from archiver.codecs.diffusion.backbones import tiny

    torch.manual_seed(0)
    vae, unet = tiny.build_vae(), tiny.build_unet()
    state = {f"vae.{k}": v.contiguous() for k, v in vae.state_dict().items()}
    state.update({f"unet.{k}": v.contiguous() for k, v in unet.state_dict().items()})
    d.mkdir(parents=True, exist_ok=True)
    (d / tiny.CONFIG_FILE).write_text(json.dumps({"vae": tiny.VAE_CONFIG, "unet": tiny.UNET_CONFIG,
                                                  "scheduler": tiny.SCHEDULER_CONFIG}))
    save_file(state, str(d / tiny.WEIGHTS_FILE))
    return d


ALL_DIFFUSION_POLICY = """\
version: 1
name: all-diffusion-zero-floor
defaults: {original: replace}
rules:
  - name: everything
    when: {path: ["**"]}
    action: diffusion
    allow_generative: true
    bpp: 0.15
    floor: {min_psnr: 0, min_ms_ssim: 0}
default:
  action: diffusion
  allow_generative: true
  bpp: 0.15
  floor: {min_psnr: 0, min_ms_ssim: 0}
"""


def bench_migrate(files, workers: int, policy: str | None, work: Path) -> dict:
    root, home = work / "migrate-root", work / "migrate-home"
    size = _copy(files, root)
    cfg = _config(work / "migrate.yaml", policy=policy, workers=workers, **EXTRA)
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "archiver", "migrate", str(root), "--json",
           "--workers", str(workers)]
    with open(work / "migrate.log", "w") as log:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=_env(home, cfg))
        sampler = TreeSampler(p.pid)
        out, _ = p.communicate()
    tree_peak = sampler.stop()
    res = json.loads(out)
    rep = json.loads(res["stdout"]) if res["stdout"].strip().startswith("{") else {}
    n = rep.get("files", 0)
    return {"mode": "migrate", "workers": workers, "images": len(files), "handled": n, "bytes_in": size,
            "seconds": round(res["seconds"], 2), "images_per_min": round(n / res["seconds"] * 60, 2),
            "s_per_image": round(res["seconds"] / max(1, n), 3),
            "peak_rss_largest_process_mib": round(res["maxrss_kib"] / 1024, 1),
            "peak_rss_tree_mib": round(tree_peak / 2**20, 1) if tree_peak else None,
            "by_outcome": rep.get("by_outcome"), "saved_bytes": rep.get("saved"), "rc": res["rc"]}


def _committed(home: Path) -> int:
    import sqlite3

    db = home / "catalog.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("select count(*) from work_queue where state in ('done','failed')").fetchone()[0]
    except sqlite3.Error:
        return 0


def bench_daemon(files, workers: int, policy: str | None, settle: float, work: Path) -> dict:
    root, home = work / "daemon-root", work / "daemon-home"
    root.mkdir(parents=True)
    cfg = _config(work / "daemon.yaml", policy=policy, workers=workers, roots=[str(root)], settle_seconds=settle,
                  rescan_seconds=3600, **EXTRA)
    log = open(work / "daemon.log", "w")
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "archiver", "daemon", "--json-logs"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=_env(home, cfg))
    sampler = TreeSampler(p.pid)
    deadline = time.time() + 120
    while time.time() < deadline and "reconciliation scan done" not in (work / "daemon.log").read_text():
        if p.poll() is not None:
            sys.exit(f"the daemon did not start:\n{(work / 'daemon.log').read_text()[-3000:]}")
        time.sleep(0.2)
    t0 = time.time()
    size = _copy(files, root)
    while _committed(home) < len(files) and time.time() - t0 < 3600:
        time.sleep(0.2)
    seconds = time.time() - t0
    daemon_pid = _child_pid(p.pid)
    if daemon_pid:
        os.kill(daemon_pid, signal.SIGTERM)
    out, _ = p.communicate(timeout=600)
    tree_peak = sampler.stop()
    res = json.loads(out)
    n = _committed(home)
    return {"mode": "daemon", "workers": workers, "images": len(files), "handled": n, "bytes_in": size,
            "settle_seconds": settle, "seconds": round(seconds, 2), "images_per_min": round(n / seconds * 60, 2),
            "s_per_image": round(seconds / max(1, n), 3),
            "peak_rss_largest_process_mib": round(res["maxrss_kib"] / 1024, 1),
            "peak_rss_tree_mib": round(tree_peak / 2**20, 1) if tree_peak else None, "rc": res["rc"]}


def _child_pid(pid: int) -> int | None:
    try:
        import psutil

        kids = psutil.Process(pid).children()
        return kids[0].pid if kids else None
    except Exception:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="directory of images (default: BSDS500 train from ../shared/data)")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--mode", choices=["migrate", "daemon", "both"], default="both")
    ap.add_argument("--policy", help="policy file or shipped name (default: the shipped default policy)")
    ap.add_argument("--settle", type=float, default=1.0, help="daemon settle window (s)")
    ap.add_argument("--weights", type=Path, help="tiny backbone weights directory (default: the shipped ones)")
    ap.add_argument("--random-tiny", action="store_true",
                    help="time the diffusion path with untrained tiny weights and an all-diffusion, zero-floor policy")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = ap.parse_args()
    src = args.images or next((p for p in DEFAULT_IMAGES if p.is_dir()), None)
    if src is None:
        sys.exit("no image directory: pass --images DIR")
    files = _images(src, args.count)
    scratch = Path(tempfile.mkdtemp(prefix="archiver-bench-"))
    if args.random_tiny:
        args.weights = random_tiny_weights(scratch / "random-tiny")
        if not args.policy:
            (scratch / "all-diffusion.yaml").write_text(ALL_DIFFUSION_POLICY)
            args.policy = str(scratch / "all-diffusion.yaml")
    if args.weights:
        EXTRA.update(backbone="tiny", diffusers_model=str(args.weights))
    results = []
    for w in args.workers:
        for mode in (["migrate", "daemon"] if args.mode == "both" else [args.mode]):
            work = Path(tempfile.mkdtemp(prefix=f"archiver-bench-{mode}-{w}-"))
            try:
                r = (bench_migrate(files, w, args.policy, work) if mode == "migrate"
                     else bench_daemon(files, w, args.policy, args.settle, work))
            finally:
                if not args.keep:
                    shutil.rmtree(work, ignore_errors=True)
            results.append(r)
            if not args.json:
                print(f"{mode:8s} workers={w}: {r['handled']}/{r['images']} images in {r['seconds']} s = "
                      f"{r['images_per_min']} img/min; peak RSS largest process {r['peak_rss_largest_process_mib']} MiB, "
                      f"tree {r['peak_rss_tree_mib']} MiB" + (f"; outcomes {r.get('by_outcome')}" if r.get("by_outcome") else ""),
                      flush=True)
    meta = {"machine": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "images_dir": str(src), "count": args.count, "policy": args.policy or "default",
            "weights": "random tiny (timing only)" if args.random_tiny else str(args.weights or "shipped"),
            "loadavg_at_end": os.getloadavg()}
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
