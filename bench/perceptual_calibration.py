#!/usr/bin/env python3
"""Calibrate ``archiver.perceptual`` against the PyPI ``ssimulacra2`` package and libjxl's own
tools, measure its half/quarter-size pre-check and its speed.

Not a test: the measurement behind "The perceptual score" in docs/benchmarks.md.

    python bench/perceptual_calibration.py [--data ../shared/data/train] [--seed 23]
        [--per-distortion 3] [--ssimulacra2-bin PATH] [--butteraugli-bin LABEL=PATH ...]
        [--precheck-images 40] [--libjxl-blur-tool PATH] [--speed] [--out docs/bench]

- **Pairs** (seeded, from ``train/`` only: BSDS500, T91, imagenet-sample; never Kodak): each
  distortion below is applied to ``--per-distortion`` different images, at their own sizes:
  JPEG (Pillow, 4:2:0) q 5/15/30/50/75/92, AVIF q 20/45/70, WebP q 10/40/80, Gaussian blur
  sigma 0.7/1.5/3, Gaussian noise sigma 4/12, a 1-pixel shift (edge replicated), a colour shift
  (R +8, B -6), brightness +10, saturation x0.8, and identical copies.
- **Scores** on the same PNG files: the package (``compute_ssimulacra2`` on the paths), ours
  (``archiver.perceptual.ssimulacra2``), libjxl's ``ssimulacra2`` tool, and each butteraugli
  binary given (max-norm and 3-norm); ours at ``downscale`` 2 and 4.
- **Pre-check**: a second seeded set of codec candidates (JPEG/WebP/AVIF at several qualities on
  ``--precheck-images`` other images): how the half- and quarter-size scores predict the full one,
  over the candidates large enough for the reduced size to be used. ``--render JSON`` recomputes
  that summary and redraws the plot from a written JSON.
- **Large photos** (libjxl's tool given): every train/ image of at least 1 MP through JPEG q80/
  90/97, AVIF q85, WebP q92, ours vs the tool: where libjxl's float32 blur rounding shows.
- **Cause** (``--libjxl-blur-tool``, bench/jxl_blur_tool.cc built against libjxl): for every
  pair where ours and the tool differ by more than 0.1, ours again with libjxl's own blur.
- **Speed** (``--speed``): seconds per call, one thread (OpenCV and torch set to one; run it
  under ``taskset -c N`` on a shared machine), for several image sizes (made by resizing a train/
  image), package vs ours (full, prepared reference, half size).

Writes ``perceptual-calibration-<date>.json`` (every pair's raw numbers and the summaries) and
``perceptual-calibration-<date>.png`` (scatter plots) to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from archiver import perceptual  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "train"


def _train_images(root: Path) -> list[Path]:
    exts = {".png", ".jpg", ".jpeg", ".bmp"}
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in exts)


def _plain(img: Image.Image) -> Image.Image:
    """8-bit RGB pixels only: no ICC profile or other metadata travels into the PNGs (libjxl's
    tools would colour-manage a profile that our API, by contract, ignores)."""
    return Image.fromarray(np.asarray(img.convert("RGB")))


def _codec(img: Image.Image, fmt: str, q: int) -> Image.Image:
    buf = io.BytesIO()
    kw = {"quality": q}
    if fmt == "WEBP":
        kw["method"] = 4
    if fmt == "AVIF":
        kw["speed"] = 8
    img.save(buf, fmt, **kw)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _shift(img: Image.Image, rng) -> Image.Image:
    a = np.asarray(img)
    a = np.concatenate([a[:, :1], a[:, :-1]], axis=1) if rng.random() < 0.5 else np.concatenate([a[:1], a[:-1]], axis=0)
    return Image.fromarray(a)


def _noise(img: Image.Image, sigma: float, rng) -> Image.Image:
    a = np.asarray(img).astype(np.float32) + rng.normal(0, sigma, size=np.asarray(img).shape)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def _offset(img: Image.Image, d: tuple[int, int, int]) -> Image.Image:
    a = np.asarray(img).astype(np.int16) + np.array(d, np.int16)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def distortions(rng) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    out += [(f"jpeg-q{q}", lambda im, q=q: _codec(im, "JPEG", q)) for q in (5, 15, 30, 50, 75, 92)]
    out += [(f"avif-q{q}", lambda im, q=q: _codec(im, "AVIF", q)) for q in (20, 45, 70)]
    out += [(f"webp-q{q}", lambda im, q=q: _codec(im, "WEBP", q)) for q in (10, 40, 80)]
    out += [(f"blur-{s}", lambda im, s=s: im.filter(ImageFilter.GaussianBlur(s))) for s in (0.7, 1.5, 3)]
    out += [(f"noise-{s}", lambda im, s=s: _noise(im, s, rng)) for s in (4, 12)]
    out += [("shift-1px", lambda im: _shift(im, rng)),
            ("colour-r+8-b-6", lambda im: _offset(im, (8, 0, -6))),
            ("brightness+10", lambda im: _offset(im, (10, 10, 10))),
            ("saturation-0.8", lambda im: ImageEnhance.Color(im).enhance(0.8)),
            ("identical", lambda im: im.copy())]
    return out


def make_pairs(data: Path, seed: int, per: int, tmp: Path) -> list[dict]:
    rng = np.random.default_rng(seed)
    files = _train_images(data)
    if not files:
        raise SystemExit(f"no images under {data}")
    dist = distortions(rng)
    chosen = rng.choice(len(files), size=len(dist) * per, replace=False)
    pairs = []
    for i, idx in enumerate(chosen):
        name, fn = dist[i // per]
        src = files[idx]
        opened = Image.open(src)
        icc = bool(opened.info.get("icc_profile"))
        ref = _plain(opened)
        out = _plain(fn(ref))
        pr, pd = tmp / f"{i:03d}-ref.png", tmp / f"{i:03d}-dist.png"
        ref.save(pr)
        out.save(pd)
        pairs.append({"i": i, "image": str(src.relative_to(data)), "size": list(ref.size),
                      "source_had_icc": icc, "distortion": name, "ref": pr, "dist": pd})
    return pairs, set(int(c) for c in chosen)


def _run_tool(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise RuntimeError(f"{cmd[0]} failed: {r.stderr.strip()[-300:]}")
    return r.stdout


def score_pairs(pairs: list[dict], ssim2_bin: str | None, butter_bins: dict[str, str]) -> None:
    import ssimulacra2 as pkg

    for p in pairs:
        a = np.asarray(Image.open(p["ref"]).convert("RGB"))
        b = np.asarray(Image.open(p["dist"]).convert("RGB"))
        t0 = time.perf_counter()
        p["package"] = float(pkg.compute_ssimulacra2(str(p["ref"]), str(p["dist"])))
        t1 = time.perf_counter()
        p["ours"] = perceptual.ssimulacra2(a, b)
        t2 = time.perf_counter()
        p["ours_half"] = perceptual.ssimulacra2(a, b, downscale=2)
        p["ours_quarter"] = perceptual.ssimulacra2(a, b, downscale=4)
        p["seconds"] = {"package": t1 - t0, "ours": t2 - t1}
        if ssim2_bin:
            p["libjxl"] = float(_run_tool([ssim2_bin, str(p["ref"]), str(p["dist"])]).split()[0])
        for label, exe in butter_bins.items():
            out = _run_tool([exe, str(p["ref"]), str(p["dist"])])
            p[f"butteraugli[{label}]"] = {"max": perceptual._parse_butteraugli(out, "max"),
                                          "3-norm": perceptual._parse_butteraugli(out, "3")}
        print(f"{p['i']:3d} {p['distortion']:16s} {p['size'][0]}x{p['size'][1]:<4d} pkg {p['package']:8.3f}"
              f" ours {p['ours']:8.3f} libjxl {p.get('libjxl', float('nan')):8.3f} half {p['ours_half']:8.3f}",
              flush=True)


def _libjxl_blur(tool: str):
    """A drop-in for archiver.perceptual._blur that runs libjxl's own blur (jxl_blur_tool)."""

    def blur(x: np.ndarray) -> np.ndarray:
        h, w, c = x.shape
        with tempfile.TemporaryDirectory() as tmp:
            pi, po = Path(tmp) / "in.f32", Path(tmp) / "out.f32"
            np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32).tofile(pi)
            subprocess.run([tool, str(pi), str(po), str(w), str(h), str(c)], check=True)
            return np.fromfile(po, np.float32).reshape(c, h, w).transpose(1, 2, 0).copy()

    return blur


def _with_libjxl_blur(tool: str, a, b) -> float:
    saved = perceptual._blur
    perceptual._blur = _libjxl_blur(tool)
    try:
        return perceptual.ssimulacra2(a, b)
    finally:
        perceptual._blur = saved


def cause(pairs: list[dict], tool: str) -> None:
    for p in pairs:
        if "libjxl" in p and abs(p["ours"] - p["libjxl"]) > 0.1:
            a = np.asarray(Image.open(p["ref"]).convert("RGB"))
            b = np.asarray(Image.open(p["dist"]).convert("RGB"))
            p["ours_with_libjxl_blur"] = _with_libjxl_blur(tool, a, b)


def large(data: Path, ssim2_bin: str, blur_tool: str | None) -> dict:
    rows = []
    for f in _train_images(data):
        with Image.open(f) as im:
            if im.size[0] * im.size[1] < 1_000_000:
                continue
        ref = _plain(Image.open(f))
        a = np.asarray(ref)
        prepared = perceptual.Ssimulacra2Reference(a)
        with tempfile.TemporaryDirectory() as tmp:
            pr, pd = Path(tmp) / "r.png", Path(tmp) / "d.png"
            ref.save(pr)
            for fmt, q in (("JPEG", 80), ("JPEG", 90), ("JPEG", 97), ("AVIF", 85), ("WEBP", 92)):
                dist = _plain(_codec(ref, fmt, q))
                dist.save(pd)
                row = {"image": str(f.relative_to(data)), "size": list(ref.size), "codec": f"{fmt.lower()}-q{q}",
                       "ours": prepared.score(dist),
                       "libjxl": float(_run_tool([ssim2_bin, str(pr), str(pd)]).split()[0])}
                if blur_tool:
                    row["ours_with_libjxl_blur"] = _with_libjxl_blur(blur_tool, a, np.asarray(dist))
                rows.append(row)
                print(json.dumps(row), flush=True)
    d = np.array([r["ours"] - r["libjxl"] for r in rows])
    out = {"n": len(rows), "ours_minus_libjxl": {"mean": float(d.mean()), "min": float(d.min()), "max": float(d.max())},
           "rows": rows}
    if blur_tool:
        e = np.array([r["ours_with_libjxl_blur"] - r["libjxl"] for r in rows])
        out["ours_with_libjxl_blur_minus_libjxl"] = {"mean_abs": float(np.abs(e).mean()), "max_abs": float(np.abs(e).max())}
    return out


def _diffs(pairs, a: str, b: str) -> dict:
    d = np.array([abs(p[a] - p[b]) for p in pairs if a in p and b in p])
    if not d.size:
        return {}
    worst = max((p for p in pairs if a in p and b in p), key=lambda p: abs(p[a] - p[b]))
    return {"n": int(d.size), "mean_abs": float(d.mean()), "max_abs": float(d.max()),
            "within_0.5": int((d <= 0.5).sum()), "within_0.01": int((d <= 0.01).sum()),
            "worst": {"i": worst["i"], "image": worst["image"], "distortion": worst["distortion"],
                      a: worst[a], b: worst[b]}}


def _pearson(x, y) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def _spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return _pearson(rx, ry)


def precheck(data: Path, seed: int, n_images: int, exclude: set[int]) -> dict:
    rng = np.random.default_rng(seed + 1)
    files = _train_images(data)
    pool = [i for i in range(len(files)) if i not in exclude]
    chosen = rng.choice(pool, size=n_images, replace=False)
    settings = [("JPEG", q) for q in (10, 25, 40, 60, 80, 92)] + [("WEBP", q) for q in (20, 50, 80)] + \
               [("AVIF", q) for q in (25, 50, 75)]
    rows = []
    t_full = t_half = t_quarter = 0.0
    for idx in chosen:
        ref = _plain(Image.open(files[idx]))
        a = np.asarray(ref)
        if min(a.shape[:2]) < 4 * perceptual.MIN_SIZE:
            continue
        refs = {k: perceptual.Ssimulacra2Reference(a, downscale=k) for k in (1, 2, 4)}
        for fmt, q in settings:
            b = np.asarray(_plain(_codec(ref, fmt, q)))
            t0 = time.perf_counter()
            full = refs[1].score(b)
            t1 = time.perf_counter()
            half = refs[2].score(b)
            t2 = time.perf_counter()
            quarter = refs[4].score(b)
            t3 = time.perf_counter()
            t_full, t_half, t_quarter = t_full + t1 - t0, t_half + t2 - t1, t_quarter + t3 - t2
            rows.append({"image": str(files[idx].relative_to(data)), "size": list(ref.size),
                         "codec": f"{fmt.lower()}-q{q}", "full": full, "half": half, "quarter": quarter,
                         "used": {"half": refs[2].downscale, "quarter": refs[4].downscale}})
    out = {"seconds_total": {"full": t_full, "half": t_half, "quarter": t_quarter}, "rows": rows}
    out.update(precheck_summary(rows))
    return out


def _applied(row: dict, k: str) -> bool:
    """Whether the reduced size was really used (not the full-size fallback under 6 scales)."""
    if "used" in row:
        return row["used"][k] > 1
    f = 2 if k == "half" else 4
    return -(-min(row["size"]) // f) >= perceptual.SIX_SCALES


def precheck_summary(rows: list[dict]) -> dict:
    """How the half/quarter-size estimates predict the full score, over the candidates where the
    reduced size was really used."""
    out = {"n": len(rows), "images": len(set(r["image"] for r in rows))}
    for k in ("half", "quarter"):
        sel = [r for r in rows if _applied(r, k)]
        if len(sel) < 3:
            out[k] = {"n": len(sel), "note": "too few images large enough (a side >= "
                      f"{perceptual.SIX_SCALES * (2 if k == 'half' else 4) - 1} px) to measure"}
            continue
        full = np.array([r["full"] for r in sel])
        est = np.array([r[k] for r in sel])
        err = est - full
        a_, b_ = np.polyfit(est, full, 1)  # a linear fit full ~ a * est + b, and its residuals
        res = full - (a_ * est + b_)
        # within one image and codec, does the estimate order the qualities as the score does?
        groups: dict = {}
        for r in sel:
            groups.setdefault((r["image"], r["codec"].split("-")[0]), []).append(r)
        steps = inversions = 0
        for g in groups.values():
            g.sort(key=lambda r: int(r["codec"].split("-q")[1]))
            for u, v in zip(g, g[1:]):
                steps += 1
                inversions += (v[k] - u[k]) * (v["full"] - u["full"]) < 0
        o = {"n": len(sel), "images": len(set(r["image"] for r in sel)),
             "pearson": _pearson(est, full), "spearman": _spearman(est, full),
             "mean_error": float(err.mean()), "max_abs_error": float(np.abs(err).max()),
             "min_error": float(err.min()), "share_estimate_below_full": float((err < 0).mean()),
             "order_inversions_within_image_and_codec": {"inversions": int(inversions), "steps": steps},
             "fit": {"slope": float(a_), "intercept": float(b_), "max_abs_residual": float(np.abs(res).max()),
                     "rms_residual": float(np.sqrt((res**2).mean()))},
             "reject_below_target": {}}
        # the rule "estimate < T => full < T": does it ever reject a candidate reaching T?
        for target in (50, 60, 70, 80, 90):
            rejected = est < target
            o["reject_below_target"][str(target)] = {
                "rejected": int(rejected.sum()), "wrongly_rejected": int((rejected & (full >= target)).sum()),
                "candidates_reaching_target": int((full >= target).sum())}
        out[k] = o
    return out


def speed(data: Path, seed: int, ssim2_bin: str | None) -> dict:
    import cv2
    import torch

    import ssimulacra2 as pkg

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    files = _train_images(data / "imagenet-sample") or _train_images(data)
    src = _plain(Image.open(files[np.random.default_rng(seed).integers(len(files))]))
    out = {"source_image": str(files[0].parent.name), "rows": []}
    for w, h in ((256, 256), (768, 512), (1920, 1080), (4000, 3000)):
        ref = src.resize((w, h), Image.LANCZOS)
        dist = _plain(_codec(ref, "JPEG", 50))
        a, b = np.asarray(ref), np.asarray(dist)

        def best(fn, n):
            fn()
            ts = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return min(ts), float(np.median(ts))

        n = 7 if w * h <= 1e6 else 3
        row = {"size": [w, h], "megapixels": w * h / 1e6}
        row["ours_full"] = best(lambda: perceptual.ssimulacra2(a, b), n)
        prepared = perceptual.Ssimulacra2Reference(a)
        row["ours_prepared_candidate"] = best(lambda: prepared.score(b), n)
        half = perceptual.Ssimulacra2Reference(a, downscale=2)
        row["ours_half_candidate"] = best(lambda: half.score(b), n)
        if w * h <= 2.1e6:
            with tempfile.TemporaryDirectory() as tmp:
                pr, pd = Path(tmp) / "r.png", Path(tmp) / "d.png"
                ref.save(pr)
                dist.save(pd)
                row["package"] = best(lambda: pkg.compute_ssimulacra2(str(pr), str(pd)), 3 if w * h < 1e6 else 1)
        if ssim2_bin:  # a process per call, PNG decoding included
            with tempfile.TemporaryDirectory() as tmp:
                pr, pd = Path(tmp) / "r.png", Path(tmp) / "d.png"
                ref.save(pr, compress_level=1)
                dist.save(pd, compress_level=1)
                row["libjxl_tool_process"] = best(lambda: _run_tool([ssim2_bin, str(pr), str(pd)]), 3)
        print(json.dumps(row), flush=True)
        out["rows"].append(row)
    return out


def plot(pairs: list[dict], pre: dict | None, big: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    have_jxl = all("libjxl" in p for p in pairs)
    panels = [("libjxl" if have_jxl else "package", "ours"), ("libjxl" if have_jxl else "ours", "package")]
    n = len(panels) + (1 if pre else 0)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 5))
    for ax, (xk, yk) in zip(axes, panels):
        x = np.array([p[xk] for p in pairs])
        y = np.array([p[yk] for p in pairs])
        ax.scatter(x, y, s=14, label=f"{len(x)} train/ pairs")
        lo, hi = min(x.min(), y.min()) - 3, 101
        if big and (xk, yk) == ("libjxl", "ours"):
            bx = np.array([r["libjxl"] for r in big["rows"]])
            ax.scatter(bx, [r["ours"] for r in big["rows"]], s=14, c="tab:red",
                       label=f"{len(bx)} >=1 MP photos, high quality")
            if "ours_with_libjxl_blur" in big["rows"][0]:
                ax.scatter(bx, [r["ours_with_libjxl_blur"] for r in big["rows"]], s=18, marker="x",
                           c="tab:green", label="the same, ours with libjxl's blur")
            ax.legend(fontsize=8, loc="upper left")
            inset = ax.inset_axes([0.55, 0.08, 0.42, 0.42])
            sel = bx > 75
            inset.scatter(bx[sel], np.array([r["ours"] for r in big["rows"]])[sel], s=8, c="tab:red")
            if "ours_with_libjxl_blur" in big["rows"][0]:
                inset.scatter(bx[sel], np.array([r["ours_with_libjxl_blur"] for r in big["rows"]])[sel], s=10,
                              marker="x", c="tab:green")
            inset.plot([75, 100], [75, 100], "k--", lw=0.6)
            inset.set_xlim(75, 97)
            inset.set_ylim(75, 97)
            inset.tick_params(labelsize=6)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        d = np.abs(x - y)
        ax.set_title(f"{yk} vs {xk}: mean |d| {d.mean():.3f}, max {d.max():.3f}", fontsize=10)
        ax.set_xlabel(f"{xk} SSIMULACRA2")
        ax.set_ylabel(f"{yk} SSIMULACRA2")
        ax.grid(alpha=0.3)
    if pre:
        ax = axes[-1]
        full = np.array([r["full"] for r in pre["rows"]])
        for k, c in (("half", "tab:orange"), ("quarter", "tab:green")):
            sel = [r for r in pre["rows"] if _applied(r, k)]
            if len(sel) >= 3:
                ax.scatter([r["full"] for r in sel], [r[k] for r in sel], s=6, c=c,
                           label=f"{k}: {len(sel)} candidates (pearson {pre[k]['pearson']:.3f})")
        ax.plot([full.min(), 100], [full.min(), 100], "k--", lw=0.8)
        ax.set_xlabel("full-size score (ours)")
        ax.set_ylabel("reduced-size score (ours)")
        ax.set_title(f"pre-check: {pre['n']} codec candidates, {pre['images']} images", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--per-distortion", type=int, default=3)
    ap.add_argument("--ssimulacra2-bin", default=shutil.which("ssimulacra2"),
                    help="libjxl's tools/ssimulacra2 (default: on PATH)")
    ap.add_argument("--ssimulacra2-label", default="", help="where that binary came from, for the record")
    ap.add_argument("--butteraugli-bin", action="append", default=[], metavar="LABEL=PATH")
    ap.add_argument("--precheck-images", type=int, default=40)
    ap.add_argument("--libjxl-blur-tool", help="bench/jxl_blur_tool.cc built against libjxl (see there)")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    ap.add_argument("--date", default=_dt.date.today().isoformat())
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="recompute the pre-check summary and redraw the plot from an earlier JSON")
    args = ap.parse_args(argv)
    if args.render:
        record = json.loads(args.render.read_text())
        if record.get("precheck"):
            record["precheck"].update(precheck_summary(record["precheck"]["rows"]))
        args.render.write_text(json.dumps(record, indent=1, default=float) + "\n")
        plot(record["pairs"], record.get("precheck"), record.get("large"), args.render.with_suffix(".png"))
        print(json.dumps({k: v for k, v in record["precheck"].items() if k != "rows"}, indent=1))
        return 0
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} is absent (needs ../shared/data/train)")
    butter = dict(x.split("=", 1) for x in args.butteraugli_bin)
    if not butter and perceptual.butteraugli_binary():
        butter = {"PATH": perceptual.butteraugli_binary()}

    import ssimulacra2 as pkg

    record = {"date": args.date, "metric": perceptual.METRIC, "package_version": pkg.__version__,
              "seed": args.seed, "data": str(args.data),
              "tools": {"ssimulacra2": args.ssimulacra2_bin, "ssimulacra2_label": args.ssimulacra2_label,
                        "butteraugli": butter}}
    with tempfile.TemporaryDirectory(prefix="perceptual-cal-") as tmp:
        pairs, used = make_pairs(args.data, args.seed, args.per_distortion, Path(tmp))
        score_pairs(pairs, args.ssimulacra2_bin, butter)
        if args.libjxl_blur_tool:
            cause(pairs, args.libjxl_blur_tool)
    for p in pairs:
        p.pop("ref")
        p.pop("dist")
    record["agreement"] = {"ours_vs_libjxl": _diffs(pairs, "ours", "libjxl"),
                           "ours_with_libjxl_blur_vs_libjxl (pairs > 0.1 apart)": _diffs(
                               pairs, "ours_with_libjxl_blur", "libjxl"),
                           "package_vs_libjxl": _diffs(pairs, "package", "libjxl"),
                           "ours_vs_package": _diffs(pairs, "ours", "package")}
    blabels = list(butter)
    if len(blabels) >= 2:
        ka, kb = (f"butteraugli[{x}]" for x in blabels[:2])
        d = np.array([abs(p[ka]["max"] - p[kb]["max"]) for p in pairs])
        d3 = np.array([abs(p[ka]["3-norm"] - p[kb]["3-norm"]) for p in pairs])
        record["agreement"][f"butteraugli {blabels[0]} vs {blabels[1]}"] = {
            "max_norm": {"mean_abs": float(d.mean()), "max_abs": float(d.max())},
            "3_norm": {"mean_abs": float(d3.mean()), "max_abs": float(d3.max())}}
    if blabels:
        k = f"butteraugli[{blabels[0]}]"
        s = np.array([p["ours"] for p in pairs])
        record["agreement"][f"ours vs {k} (rank correlation, expected negative)"] = {
            "spearman_max": _spearman(s, np.array([p[k]["max"] for p in pairs])),
            "spearman_3norm": _spearman(s, np.array([p[k]["3-norm"] for p in pairs]))}
    by_size = {}
    for lo, hi in ((0, 0.25e6), (0.25e6, 1e6), (1e6, 1e9)):
        sel = [p for p in pairs if "libjxl" in p and lo <= p["size"][0] * p["size"][1] < hi]
        if sel:
            by_size[f"{lo / 1e6:g}-{hi / 1e6:g} MP"] = _diffs(sel, "ours", "libjxl")
    record["agreement"]["ours_vs_libjxl_by_size"] = by_size
    record["pairs"] = pairs
    if args.ssimulacra2_bin:
        record["large"] = large(args.data, args.ssimulacra2_bin, args.libjxl_blur_tool)
    pre = precheck(args.data, args.seed, args.precheck_images, used) if args.precheck_images else None
    record["precheck"] = pre
    if args.speed:
        record["speed"] = speed(args.data, args.seed, args.ssimulacra2_bin)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"perceptual-calibration-{args.date}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=float) + "\n")
    plot(pairs, pre, record.get("large"), stem.with_suffix(".png"))
    print(json.dumps({k: v for k, v in record["agreement"].items()}, indent=1))
    if pre:
        print(json.dumps({k: v for k, v in pre.items() if k != "rows"}, indent=1))
    print(f"wrote {stem}.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
