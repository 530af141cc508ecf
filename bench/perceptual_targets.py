"""Issue 23's measurement: the default policy against a plain AVIF pass, judged by SSIMULACRA2.

For each collection (a folder of images, copied first; the originals are never touched):

1. ``archiver migrate --dry-run --json`` then ``archiver migrate --json`` with the shipped default
   policy, each timed (real processes, as a user runs them);
2. every stored lossy file decoded here, in this separate process, through the codec registry
   (what ``restore`` gives once the vaulted original has expired: ``restore`` itself prefers the
   vault copy while there is one), and re-scored against the original (SSIMULACRA2, PSNR,
   MS-SSIM, butteraugli when libjxl's ``butteraugli_main`` is installed): each must be at or
   above its rule's target; ``archiver restore`` of everything is run too (it must succeed);
3. AVIF at fixed qualities over the same originals (Pillow, speed 6, as archiver's AVIF codec):
   the single quality whose *worst* file reaches each file's target (the careful AVIF user), and
   quality 60 everywhere (the one-line alternative), with each side's bytes, mean and minimum score;
4. optionally (``--old-rev``) the same ``migrate`` with an older revision of archiver (a git
   worktree), timed in the same run, for the speed bar (at most 1.5x).

Writes ``results.json`` (every file, every number), ``summary.md``, a plot (bytes and scores per
file, both collections) and side-by-side crops of chosen files (original, archiver, AVIF q60)::

    python bench/perceptual_targets.py run --collection kodak=../shared/data/kodak \\
        --collection bsds-val=../shared/data/train/bsds500/val:24 --old-rev f23089f --out docs/bench/perceptual-targets
    python bench/perceptual_targets.py crops docs/bench/perceptual-targets kodim03 kodim24
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.metrics import ms_ssim, psnr  # noqa: E402
from archiver.perceptual import METRIC, butteraugli, ssimulacra2  # noqa: E402

EXTS = {".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp"}
#: the fixed AVIF qualities tried (then every quality just below the first one that passes)
AVIF_GRID = list(range(20, 100, 5)) + [99]
#: what a file kept lossless by its rule (graphics, tiny images) asks of the AVIF user
LOSSLESS_RULE_TARGET = 90.0


def _rgb(path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def pick(spec: str) -> tuple[str, list[Path]]:
    """``NAME=DIR`` (every image) or ``NAME=DIR:N`` (N chosen with a fixed seed)."""
    name, _, rest = spec.partition("=")
    folder, _, n = rest.rpartition(":") if rest.rsplit(":", 1)[-1].isdigit() else (rest, "", "")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in EXTS)
    if n:
        files = sorted(random.Random(2026).sample(files, min(int(n), len(files))))
    return name, files


POLICY: str | None = None  # --policy: a policy file instead of the shipped default


def archiver(args: list[str], home: Path, cwd: Path, pythonpath: Path = ROOT) -> tuple[dict, float]:
    if POLICY and args[0] == "migrate" and pythonpath == ROOT:
        args = [*args, "--policy", POLICY]
    env = dict(os.environ, ARCHIVER_HOME=str(home), PYTHONPATH=str(pythonpath))
    env.pop("ARCHIVER_CONFIG", None)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "archiver", *args, "--json"], cwd=cwd, env=env, capture_output=True,
                       text=True)
    secs = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(f"archiver {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout), secs


def rows(home: Path) -> list[dict]:
    db = sqlite3.connect(home / "catalog.sqlite")
    db.row_factory = sqlite3.Row
    out = [dict(r) for r in db.execute(
        "select path, rule, action, codec, size, compressed_size, score, region_score, target_score, score_metric, "
        "restore_exact, psnr, ms_ssim, candidates, codec_params, compressed_path, state from file_versions "
        "where state='committed' order by path")]
    db.close()
    for r in out:
        r["candidates"] = json.loads(r["candidates"]) if r["candidates"] else []
        r["codec_params"] = json.loads(r["codec_params"]) if r["codec_params"] else {}
    return out


def avif_at(img: Image.Image, q: int, subsampling: str = "4:2:0") -> tuple[int, Image.Image]:
    b = io.BytesIO()
    img.save(b, "AVIF", quality=q, speed=6, max_threads=1, subsampling=subsampling)
    return len(b.getvalue()), _rgb(io.BytesIO(b.getvalue()))


def avif_sweep(originals: dict[str, Path], targets: dict[str, float]) -> dict:
    """Per file, size and score at each quality of the grid, refined below the fixed quality whose
    worst file reaches every file's target; Pillow's default 4:2:0, and 4:4:4 as a careful user
    aiming at visually lossless would set it (table "444")."""
    from archiver.perceptual import Ssimulacra2Reference

    imgs = {k: _rgb(p) for k, p in originals.items()}
    refs = {k: Ssimulacra2Reference(v) for k, v in imgs.items()}
    tables: dict[str, dict[str, dict[int, tuple[int, float]]]] = {"420": {k: {} for k in imgs},
                                                                   "444": {k: {} for k in imgs}}

    def at(q: int, sub: str = "420") -> None:
        for k, img in imgs.items():
            if q not in tables[sub][k]:
                n, rec = avif_at(img, q, f"4:{sub[1]}:{sub[2]}")
                tables[sub][k][q] = (n, round(refs[k].score(rec), 3))

    def all_pass(q: int, tg: dict, sub: str) -> bool:
        at(q, sub)
        return all(tables[sub][k][q][1] >= tg[k] for k in imgs)

    out = {}
    for label, tg, sub in (("per-file targets", targets, "420"), ("per-file targets, 4:4:4", targets, "444"),
                           ("uniform 70", {k: 70.0 for k in imgs}, "420")):
        first = next((q for q in AVIF_GRID if all_pass(q, tg, sub)), None)
        if first is not None:
            prev = max([q for q in AVIF_GRID if q < first], default=first)
            for q in range(prev + 1, first):
                if all_pass(q, tg, sub):
                    first = q
                    break
        out[label] = first
    at(60)
    return {"table": {k: {str(q): v for q, v in t.items()} for k, t in tables["420"].items()},
            "table444": {k: {str(q): v for q, v in t.items()} for k, t in tables["444"].items()},
            "fixed_quality": out}


def collection(name: str, files: list[Path], work: Path, old_rev: str | None, workers: int) -> dict:
    print(f"== {name}: {len(files)} files", flush=True)
    photos = work / name / "photos"
    photos.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, photos / f.name)
    originals = {f.name: f for f in files}
    home = work / name / "state"
    dry, t_dry = archiver(["migrate", str(photos), "--dry-run", "--workers", str(workers)], home, work / name)
    print(f"   dry run {t_dry:.0f} s", flush=True)
    run, t_run = archiver(["migrate", str(photos), "--workers", str(workers)], home, work / name)
    print(f"   migrate {t_run:.0f} s", flush=True)
    cat = rows(home)
    restored = work / name / "restored"
    back_report, _ = archiver(["restore", str(photos / "*"), "--to", str(restored)], home, work / name)
    from archiver.codecs import get_codec

    decoded = work / name / "decoded"
    decoded.mkdir(exist_ok=True)
    per_file = []
    for r in cat:
        fn = Path(r["path"]).name
        orig = _rgb(originals[fn])
        back = None
        if r["restore_exact"] == "approx":
            back = decoded / (Path(fn).stem + ".png")
            get_codec(r["codec"]).decode(Path(r["compressed_path"]).read_bytes()).convert("RGB").save(back)
        d = {"file": fn, "rule": r["rule"], "codec": r["codec"], "bytes_before": r["size"],
             "bytes_after": r["compressed_size"], "exact": r["restore_exact"], "target": r["target_score"],
             "score_at_encode": r["score"], "candidates": r["candidates"], "quality": r["codec_params"].get("quality")}
        if r["restore_exact"] == "approx" and back is not None:
            rec = _rgb(back)
            d.update(rescored=round(ssimulacra2(orig, rec), 3), psnr=round(psnr(orig, rec), 3),
                     ms_ssim=round(float(ms_ssim(orig, rec)), 5), butteraugli=butteraugli(orig, rec))
        else:
            d.update(rescored=100.0, psnr=None, ms_ssim=None, butteraugli=None)
        per_file.append(d)
    predicted = {Path(p["path"]).name: p["bytes_after"] for p in dry["predictions"]}
    targets = {d["file"]: d["target"] if d["target"] is not None else LOSSLESS_RULE_TARGET for d in per_file}
    print("   AVIF sweep", flush=True)
    sweep = avif_sweep({d["file"]: originals[d["file"]] for d in per_file}, targets)
    res = {"files": per_file, "seconds": {"dry_run": round(t_dry, 1), "migrate": round(t_run, 1)},
           "restored": sum(x.get("status") == "restored" for x in back_report["results"]),
           "dry_run_bytes": sum(predicted.values()), "real_bytes": sum(d["bytes_after"] for d in per_file),
           "bytes_before": sum(d["bytes_before"] for d in per_file), "avif": sweep}
    if old_rev:
        old = work / "old-rev"
        if not old.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), old_rev], check=True,
                           capture_output=True)
        photos_old = work / name / "photos-old"
        photos_old.mkdir()
        for f in files:
            shutil.copy2(f, photos_old / f.name)
        _, t_old = archiver(["migrate", str(photos_old), "--workers", str(workers)], work / name / "state-old",
                            work / name, pythonpath=old)
        res["seconds"]["migrate_old"] = round(t_old, 1)
        res["old_rev"] = old_rev
        print(f"   old migrate {t_old:.0f} s", flush=True)
    return res


def summarise(res: dict) -> dict:
    out = {}
    for name, c in res["collections"].items():
        files = c["files"]
        lossy = [d for d in files if d["exact"] == "approx"]
        table = c["avif"]["table"]
        s = {"files": len(files), "bytes_before": c["bytes_before"], "policy_bytes": c["real_bytes"],
             "policy_saved": 1 - c["real_bytes"] / c["bytes_before"],
             "codecs": {k: sum(d["codec"] == k for d in files) for k in sorted({d["codec"] for d in files})},
             "lossy_files": len(lossy),
             "below_target": [d["file"] for d in lossy if d["rescored"] < (d["target"] or 0)],
             "policy_score_mean": float(np.mean([d["rescored"] for d in files])),
             "policy_score_min": float(min(d["rescored"] for d in files)),
             "dry_run_error": c["dry_run_bytes"] / c["real_bytes"] - 1, "seconds": c["seconds"]}
        for label, q in c["avif"]["fixed_quality"].items():
            if q is None:
                s[f"avif_fixed[{label}]"] = None
                continue
            t = c["avif"]["table444"] if label.endswith("4:4:4") else table
            sizes = [t[d["file"]][str(q)][0] for d in files]
            scores = [t[d["file"]][str(q)][1] for d in files]
            s[f"avif_fixed[{label}]"] = {"quality": q, "bytes": sum(sizes), "saved": 1 - sum(sizes) / c["bytes_before"],
                                         "score_mean": float(np.mean(scores)), "score_min": float(min(scores))}
        sizes = [table[d["file"]]["60"][0] for d in files]
        scores = [table[d["file"]]["60"][1] for d in files]
        s["avif_q60"] = {"bytes": sum(sizes), "saved": 1 - sum(sizes) / c["bytes_before"],
                         "score_mean": float(np.mean(scores)), "score_min": float(min(scores))}
        by_rule = {}
        for d in files:
            e = by_rule.setdefault(d["rule"], {"files": 0, "target": d["target"], "bytes_before": 0, "policy_bytes": 0,
                                               "avif_q60_bytes": 0, "policy_scores": [], "avif_q60_scores": []})
            e["files"] += 1
            e["bytes_before"] += d["bytes_before"]
            e["policy_bytes"] += d["bytes_after"]
            e["avif_q60_bytes"] += table[d["file"]]["60"][0]
            e["policy_scores"].append(d["rescored"])
            e["avif_q60_scores"].append(table[d["file"]]["60"][1])
        for e in by_rule.values():
            for k in ("policy_scores", "avif_q60_scores"):
                v = e.pop(k)
                e[k.replace("scores", "score_min")] = float(min(v))
                e[k.replace("scores", "score_mean")] = float(np.mean(v))
        s["by_rule"] = by_rule
        if "migrate_old" in c["seconds"]:
            s["speed_ratio"] = c["seconds"]["migrate"] / c["seconds"]["migrate_old"]
        out[name] = s
    return out


def plot(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(res["collections"].items())
    fig, axes = plt.subplots(1, len(cols), figsize=(7.5 * len(cols), 5.5), squeeze=False)
    for ax, (name, c) in zip(axes[0], cols):
        table = c["avif"]["table"]
        q = c["avif"]["fixed_quality"]["per-file targets"]
        for d in c["files"]:
            x60, s60 = table[d["file"]]["60"]
            ax.plot([d["bytes_after"] / 1024, x60 / 1024], [d["rescored"], s60], color="0.85", lw=0.8, zorder=1)
        ax.scatter([d["bytes_after"] / 1024 for d in c["files"]], [d["rescored"] for d in c["files"]], s=28,
                   label="archiver default policy (restored, re-scored)", zorder=3)
        ax.scatter([table[d["file"]]["60"][0] / 1024 for d in c["files"]], [table[d["file"]]["60"][1] for d in c["files"]],
                   s=18, marker="x", label="AVIF quality 60 everywhere", zorder=2)
        if q is not None:
            ax.scatter([table[d["file"]][str(q)][0] / 1024 for d in c["files"]],
                       [table[d["file"]][str(q)][1] for d in c["files"]], s=18, marker="^",
                       label=f"AVIF at q{q}: its worst file reaches each target", zorder=2)
        q4 = c["avif"]["fixed_quality"].get("per-file targets, 4:4:4")
        if q4 is not None:
            t4 = c["avif"]["table444"]
            ax.scatter([t4[d["file"]][str(q4)][0] / 1024 for d in c["files"]],
                       [t4[d["file"]][str(q4)][1] for d in c["files"]], s=18, marker="v",
                       label=f"AVIF 4:4:4 at q{q4}: its worst file reaches each target", zorder=2)
        for t, ls in ((70, "--"), (90, ":")):
            ax.axhline(t, color="0.5", ls=ls, lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("stored size per file (KiB, log)")
        ax.set_ylabel("SSIMULACRA2 against the original")
        s = summarise(res)[name]
        ax.set_title(f"{name}: archiver {s['policy_bytes'] / 2**20:.2f} MiB vs AVIF q60 {s['avif_q60']['bytes'] / 2**20:.2f} MiB"
                     + (f", AVIF q{q} {s['avif_fixed[per-file targets]']['bytes'] / 2**20:.2f} MiB" if q else "")
                     + (f", 4:4:4 q{q4} {s['avif_fixed[per-file targets, 4:4:4]']['bytes'] / 2**20:.2f} MiB" if q4 else ""),
                     fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def crops(out: Path, names: list[str], size: int = 256) -> None:
    """Original, archiver's stored file (restored) and AVIF q60, the same window of each file."""
    res = json.loads((out / "results.json").read_text())
    work = Path(res["work"])
    for name in names:
        for cname, c in res["collections"].items():
            d = next((d for d in c["files"] if Path(d["file"]).stem == name), None)
            if d is None:
                continue
            orig = _rgb(next(p for p in (work / cname / "photos-src").glob(f"{name}.*")))
            back = _rgb(work / cname / "decoded" / f"{name}.png")
            _, a60 = avif_at(orig, 60)
            # the window with the most detail (largest gradient energy), the same for all three
            g = np.asarray(orig.convert("L"), dtype=np.float32)
            e = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
            best, at = -1.0, (0, 0)
            for y in range(0, g.shape[0] - size, 32):
                for x in range(0, g.shape[1] - size, 32):
                    v = float(e[y:y + size, x:x + size].mean())
                    if v > best:
                        best, at = v, (x, y)
            box = (at[0], at[1], at[0] + size, at[1] + size)
            sheet = Image.new("RGB", (size * 3 + 20, size + 28), "white")
            from PIL import ImageDraw

            draw = ImageDraw.Draw(sheet)
            n60, s60 = res["collections"][cname]["avif"]["table"][d["file"]]["60"]
            labels = ["original", f"archiver: {d['codec']} {d['bytes_after'] // 1024} KiB, score {d['rescored']:.1f}",
                      f"AVIF q60: {n60 // 1024} KiB, score {s60:.1f}"]
            for i, (img, lab) in enumerate(zip((orig, back, a60), labels)):
                sheet.paste(img.crop(box), (i * (size + 10), 28))
                draw.text((i * (size + 10) + 2, 6), lab, fill="black")
            sheet.save(out / f"crop_{cname}_{name}.png")
            print(out / f"crop_{cname}_{name}.png")


def markdown(res: dict) -> str:
    s = summarise(res)
    lines = [f"# Perceptual targets vs a plain AVIF pass ({res['when']})", "",
             f"Metric: {METRIC['name']} {METRIC['version']}. Policy: {res.get('policy', 'default')}. Raw: results.json.", "",
             "| collection | files | archiver bytes (saved) | AVIF at the fixed q whose worst file reaches each target | "
             "the same, AVIF 4:4:4 | AVIF q60 (saved) | archiver score mean / min | AVIF q60 score mean / min | lossy files below target | "
             "dry run vs real bytes | migrate s (old) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, x in s.items():
        f = x["avif_fixed[per-file targets]"]
        fixed = f"q{f['quality']}: {f['bytes'] / 2**20:.2f} MiB ({f['saved']:.1%}), score min {f['score_min']:.1f}" if f else "none reaches"
        f4 = x.get("avif_fixed[per-file targets, 4:4:4]")
        fixed4 = f"q{f4['quality']}: {f4['bytes'] / 2**20:.2f} MiB ({f4['saved']:.1%}), score min {f4['score_min']:.1f}" if f4 else "none reaches"
        lines.append(
            f"| {name} | {x['files']} | {x['policy_bytes'] / 2**20:.2f} MiB ({x['policy_saved']:.1%}) | {fixed} | {fixed4} | "
            f"{x['avif_q60']['bytes'] / 2**20:.2f} MiB ({x['avif_q60']['saved']:.1%}) | "
            f"{x['policy_score_mean']:.1f} / {x['policy_score_min']:.1f} | {x['avif_q60']['score_mean']:.1f} / "
            f"{x['avif_q60']['score_min']:.1f} | {len(x['below_target'])} of {x['lossy_files']} | "
            f"{x['dry_run_error']:+.2%} | {x['seconds']['migrate']:.0f}"
            + (f" ({x['seconds']['migrate_old']:.0f}, x{x['speed_ratio']:.2f})" if "speed_ratio" in x else "") + " |")
    lines += ["", "Per rule (bytes, and the lowest / mean score of each side):", "",
              "| collection | rule | files | target | archiver | AVIF q60 |", "|---|---|---|---|---|---|"]
    for name, x in s.items():
        for rule, e in sorted(x["by_rule"].items()):
            lines.append(f"| {name} | {rule} | {e['files']} | {e['target'] if e['target'] is not None else 'lossless'} | "
                         f"{e['policy_bytes'] / 1024:.0f} KiB, {e['policy_score_min']:.1f} / {e['policy_score_mean']:.1f} | "
                         f"{e['avif_q60_bytes'] / 1024:.0f} KiB, {e['avif_q60_score_min']:.1f} / {e['avif_q60_score_mean']:.1f} |")
    return "\n".join(lines) + "\n"


def speed(collections: list[str], old_rev: str, rounds: int, workers: int, work: Path, out: Path) -> dict:
    """`migrate` of this tree against ``old_rev``, interleaved (new, old, then old, new, ...) so
    that load from other work on a shared machine falls on both sides alike; the median of the
    per-round ratios is the speed figure."""
    old = work / "old-rev"
    if not old.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), old_rev], check=True,
                       capture_output=True)
    res = {"when": time.strftime("%Y-%m-%d %H:%M"), "old_rev": old_rev, "workers": workers, "collections": {}}
    for spec in collections:
        name, files = pick(spec)
        times = []
        for i in range(rounds):
            t = {}
            for side in (("new", "old") if i % 2 == 0 else ("old", "new")):
                here = work / f"speed-{name}-{i}-{side}"
                shutil.rmtree(here, ignore_errors=True)
                (here / "photos").mkdir(parents=True)
                for f in files:
                    shutil.copy2(f, here / "photos" / f.name)
                _, t[side] = archiver(["migrate", str(here / "photos"), "--workers", str(workers)], here / "state", here,
                                      pythonpath=old if side == "old" else ROOT)
                shutil.rmtree(here, ignore_errors=True)
            times.append({k: round(v, 1) for k, v in t.items()})
            print(f"   {name} round {i + 1}: new {t['new']:.0f} s, old {t['old']:.0f} s", flush=True)
        ratios = sorted(x["new"] / x["old"] for x in times)
        res["collections"][name] = {"files": len(files), "rounds": times, "median_ratio": float(np.median(ratios))}
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.json").write_text(json.dumps(res, indent=1))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--collection", action="append", required=True, help="NAME=DIR or NAME=DIR:N")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--old-rev", help="also time `migrate` with this git revision of archiver")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--work", type=Path, help="working folder (default: a new temporary one)")
    r.add_argument("--policy", help="a policy file instead of the shipped default (a variant to compare)")
    sp = sub.add_parser("speed", help="only the speed bar: migrate against --old-rev, interleaved rounds")
    sp.add_argument("--collection", action="append", required=True, help="NAME=DIR or NAME=DIR:N")
    sp.add_argument("--out", type=Path, required=True)
    sp.add_argument("--old-rev", required=True)
    sp.add_argument("--rounds", type=int, default=3)
    sp.add_argument("--workers", type=int, default=2)
    sp.add_argument("--work", type=Path)
    c = sub.add_parser("crops")
    c.add_argument("out", type=Path)
    c.add_argument("names", nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "crops":
        crops(a.out, a.names)
        return 0
    if a.cmd == "speed":
        work = a.work or Path(tempfile.mkdtemp(prefix="perceptual-speed-"))
        res = speed(a.collection, a.old_rev, a.rounds, a.workers, work, a.out)
        for name, x in res["collections"].items():
            print(f"{name}: migrate new/old, median of {len(x['rounds'])} rounds: x{x['median_ratio']:.2f}")
        return 0
    global POLICY
    POLICY = str(Path(a.policy).resolve()) if a.policy else None
    work = a.work or Path(tempfile.mkdtemp(prefix="perceptual-targets-"))
    work.mkdir(parents=True, exist_ok=True)
    res = {"when": time.strftime("%Y-%m-%d %H:%M"), "metric": METRIC, "work": str(work), "policy": POLICY or "default",
           "collections": {}}
    a.out.mkdir(parents=True, exist_ok=True)
    for spec in a.collection:
        name, files = pick(spec)
        src = work / name / "photos-src"
        src.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, src / f.name)
        res["collections"][name] = collection(name, [src / f.name for f in files], work, a.old_rev, a.workers)
        (a.out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    res["summary"] = summarise(res)
    (a.out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    (a.out / "summary.md").write_text(markdown(res))
    plot(res, a.out / "bytes-vs-score.png")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
