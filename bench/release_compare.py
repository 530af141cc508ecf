#!/usr/bin/env python
"""Compare weights releases of the embedded model with each other and with AVIF/WebP/JPEG/JPEG XL,
at equal bytes, on a folder of images (the ship decision: docs/benchmarks.md, "Release 3").

    python bench/release_compare.py run DIR OUT --model r3=DIR [--model r2=DIR ...] [--codecs avif,webp,jxl,jpeg]
    python bench/release_compare.py report OUT [OUT ...] [--png PLOT.png] [--json]

`archiver bench` finds each codec's setting for a target rate by bisection (about ten real
encodes per image and rate); on a shared 2-core machine that is too slow for a 17 M-parameter
model. Here each model codes every image at a few fixed qualities (each a real file: real
bytes, decoded with the model's diffusion steps and with none), and its figures at 0.1, 0.2 and
0.3 bpp are read off the image's own curve, linear in log(bpp) between the two measured points
around the rate (never extrapolated: an image whose points do not bracket a rate is left out of
that rate, and the report says how many images each rate holds). Conventional codecs get the
bench's bisection at each rate (real equal bytes). ``run`` appends one JSON line per measurement
to OUT/points.jsonl and skips what is there: it can be stopped and resumed.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATES = (0.1, 0.2, 0.3)
QUALITIES = (38, 50, 62)
EXTRA_LOW, EXTRA_HIGH = 26, 74  # added when the fixed ones do not bracket 0.1 / 0.3 bpp
METRICS = ("psnr", "ms_ssim", "spectral_distance")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def _done(points: Path) -> set:
    if not points.is_file():
        return set()
    return {(r["image"], r["codec"], r.get("quality"), r.get("target_bpp"))
            for r in map(json.loads, points.read_text().splitlines())}


def _measure(orig: np.ndarray, rec) -> dict:
    from archiver.metrics import ms_ssim, psnr, spectral_distance

    rec = np.asarray(rec.convert("RGB"))
    return {"psnr": psnr(orig, rec), "ms_ssim": ms_ssim(orig, rec), "spectral_distance": spectral_distance(orig, rec)}


@click.group()
def cli():
    """Release comparison at equal bytes (see the module docs)."""


@cli.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--model", "models", multiple=True, required=True,
              help="NAME=WEIGHTS_DIR (repeatable); NAME@0.5=DIR decodes those weights with t_scale 0.5")
@click.option("--codecs", default="avif,webp,jxl,jpeg", show_default=True)
@click.option("--at-rates", is_flag=True,
              help="models hit each rate by their own rate control (real bytes at the rate, as `archiver bench`) "
                   "instead of fixed qualities read off a curve")
@click.option("--decoders", multiple=True,
              help="NAME=WEIGHTS_DIR (with --at-rates): decode the FIRST model's files with these weights too; "
                   "only for weights whose encoder side is the first model's (same bytes), else refused")
def run(images, out, models, codecs, at_rates, decoders):
    """Measure every image: each model at fixed qualities (or at each rate), each codec at each rate."""
    import torch

    from archiver.bench.codecs import get_codec
    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver.codecs.diffusion.pipeline import encode_image
    from archiver.imageio import load_image

    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    points = out / "points.jsonl"
    done = _done(points)
    bbs = {}
    for m in models:
        name, _, wd = m.partition("=")
        bbs[name] = bb = load_tiny(device="cpu", weights_dir=wd or None)
        if "@" in name:  # NAME@T_SCALE: the same weights, decoding from t_scale x the SNR-matched step
            bb.t_scale = float(name.partition("@")[2])
    if decoders and not at_rates:
        raise click.UsageError("--decoders needs --at-rates")
    first = models[0].partition("=")[2] if models else ""
    decs = {}
    for d in decoders:
        name, _, wd = d.partition("=")
        same = same_encoder(first or None, wd or None)
        if same is not True:
            raise click.UsageError(f"--decoders {name}: {same}")
        decs[name] = load_tiny(device="cpu", weights_dir=wd or None)
    conv = [get_codec(c) for c in codecs.split(",") if c]
    conv = [c for c in conv if c.available()[0]]
    with open(points, "a") as log:
        def put(rec):
            log.write(json.dumps(rec) + "\n")
            log.flush()

        for path in _images(images):
            img = load_image(path)
            orig = np.asarray(img.rgb.convert("RGB"))
            for c in conv:
                for b in RATES:
                    if (path.name, c.name, None, b) in done:
                        continue
                    found = c.search(img.rgb.convert("RGB"), b)
                    rec = c.decode(found.data)
                    put({"image": path.name, "codec": c.name, "target_bpp": b, "quality": None,
                         "bpp": len(found.data) * 8 / (img.width * img.height), **_measure(orig, rec)})
            if at_rates:
                for i, (name, bb) in enumerate(bbs.items()):
                    for b in RATES:
                        todo = [n for n in [name, *(decs if i == 0 else ())] if (path.name, n, None, b) not in done]
                        if not todo:
                            continue
                        with torch.no_grad():
                            enc = encode_image(img, bb, bpp=b)
                        for n in todo:
                            dbb = bb if n == name else decs[n]
                            put({"image": path.name, "codec": n, "quality": None, "target_bpp": b, "bpp": enc.bpp,
                                 "coded_with": name, "t": enc.t, "pixels": img.width * img.height,
                                 **_decode_and_measure(orig, relabel(enc.data, dbb), dbb, "@" not in n)})
                click.echo(f"{path.name} done", err=True)
                continue
            for name, bb in bbs.items():
                got, tried = [], []
                qs = list(QUALITIES)
                while qs:
                    q = qs.pop(0)
                    tried.append(q)
                    if (path.name, name, q, None) in done:
                        continue
                    with torch.no_grad():
                        enc = encode_image(img, bb, quality=float(q))
                    # the no-diffusion decode does not depend on t: measured for the plain name only
                    put({"image": path.name, "codec": name, "quality": q, "target_bpp": None, "bpp": enc.bpp,
                         "t": enc.t, "pixels": img.width * img.height,
                         **_decode_and_measure(orig, enc.data, bb, "@" not in name)})
                    got.append(enc.bpp)
                    if not qs and got:  # widen the sweep when it does not bracket the published rates
                        if min(got) > RATES[0] and EXTRA_LOW not in tried:
                            qs.append(EXTRA_LOW)
                        elif max(got) < RATES[-1] and EXTRA_HIGH not in tried:
                            qs.append(EXTRA_HIGH)
            click.echo(f"{path.name} done", err=True)


def same_encoder(a, b):
    """True when two assembled models code every image to the same bytes (encoder, entropy model,
    grid, latent config and timestep rule equal); otherwise the reason, in words."""
    from archiver.codecs.diffusion.backbones.tiny import CONFIG_FILE, WEIGHTS_DIR, WEIGHTS_FILE
    from archiver_train.common import read_safetensors

    dirs = [Path(d) if d else WEIGHTS_DIR for d in (a, b)]
    cfgs = [json.loads((d / CONFIG_FILE).read_text()) for d in dirs]
    for key in ("vae", "entropy", "latent_stats"):  # (the stats name the file they came from: not compared)
        if ({k: v for k, v in cfgs[0].get(key, {}).items() if k != "ae_sha256"}
                != {k: v for k, v in cfgs[1].get(key, {}).items() if k != "ae_sha256"}):
            return f"its {key} configuration differs from the first model's"
    if cfgs[0].get("codec", {}).get("t_scale") != cfgs[1].get("codec", {}).get("t_scale"):
        return "its timestep rule (t_scale) differs: the header's t would not be its own"
    ws = [read_safetensors(d / WEIGHTS_FILE)[0] for d in dirs]
    enc = [k for k in ws[0] if k.startswith(("vae.g_a.", "entropy.")) or k == "channel_steps"]
    if not enc or any(k not in ws[1] or not torch_equal(ws[0][k], ws[1][k]) for k in enc):
        return "its encoder or entropy model differs from the first model's"
    return True


def torch_equal(x, y) -> bool:
    import torch

    return x.dtype == y.dtype and torch.equal(x, y)


def relabel(data: bytes, bb) -> bytes:
    """The same file, naming ``bb``'s weights in its header (only for a model with the same encoder)."""
    from archiver.codecs.diffusion import container

    header, sections = container.unpack(data)
    if header.weights_sha256 == bb.weights_digest:
        return data
    header.weights_sha256 = bb.weights_digest
    return container.pack(header, sections)


def _decode_and_measure(orig: np.ndarray, data: bytes, bb, nodiff: bool) -> dict:
    import torch

    from archiver.codecs.diffusion.pipeline import decode_bytes

    with torch.no_grad():
        t0, c0 = time.perf_counter(), time.process_time()
        diff = decode_bytes(data, bb)
        rec = {"decode_s": time.perf_counter() - t0, "decode_cpu_s": time.process_time() - c0, **_measure(orig, diff.image)}
        if nodiff:
            rec.update({f"nodiff_{k}": v for k, v in _measure(orig, decode_bytes(data, bb, steps=0).image).items()})
    return rec


@cli.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("png", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", "models", multiple=True, required=True, help="NAME=WEIGHTS_DIR (repeatable)")
@click.option("--bpp", type=float, default=0.15, show_default=True)
@click.option("--codecs", default="avif", show_default=True, help="conventional codecs at the same rate")
@click.option("--size", type=int, default=192, show_default=True, help="crop side (the image's most textured window)")
def crops(image, png, models, bpp, codecs, size):
    """One sheet: the original and every model (its rate control) and codec at ``bpp``, the same
    crop of each, upscaled 2x with nearest neighbour and labelled with real bpp, PSNR, MS-SSIM."""
    import torch

    from archiver.bench.codecs import get_codec
    from archiver.bench.report import crop_sheet
    from archiver.bench.runner import texture_box
    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver.codecs.diffusion.pipeline import decode_bytes, encode_image
    from archiver.imageio import load_image

    torch.set_num_threads(2)
    img = load_image(image)
    rgb = img.rgb.convert("RGB")
    box = texture_box(rgb, size)
    orig = np.asarray(rgb)
    entry = {"original": rgb.crop(box), "box": box}

    def add(name, rec, nbytes):
        entry[name] = (rec.convert("RGB").crop(box), {"bpp": nbytes * 8 / (img.width * img.height), **_measure(orig, rec)})

    for m in models:
        name, _, wd = m.partition("=")
        bb = load_tiny(device="cpu", weights_dir=wd or None)
        with torch.no_grad():
            enc = encode_image(img, bb, bpp=bpp)
            add(name, decode_bytes(enc.data, bb).image, len(enc.data))
    for c in (get_codec(c) for c in codecs.split(",") if c):
        if c.available()[0]:
            found = c.search(rgb, bpp)
            add(c.name, c.decode(found.data), len(found.data))
    png.parent.mkdir(parents=True, exist_ok=True)
    label = image.name if len(image.name) <= 24 else image.name[:21] + "..."  # the label must fit its tile
    crop_sheet(entry, label, bpp, cols=len(entry) - 1).save(png)
    click.echo(str(png))


def _interp(pts: list[tuple[float, float]], bpp: float):
    """Value at ``bpp`` on an image's curve, linear in log(bpp) between bracketing points."""
    pts = sorted(pts)
    for (b0, v0), (b1, v1) in zip(pts, pts[1:]):
        if b0 <= bpp <= b1 and b1 > b0:
            w = (math.log(bpp) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return v0 + w * (v1 - v0)
    return None


def _bench_records(bench_results: tuple) -> list[dict]:
    """Records of an earlier `archiver bench` run (NAME=results.json), as codecs 'NAME:codec'
    measured at each target rate: e.g. the published release-2 Kodak run."""
    out = []
    for spec in bench_results:
        name, _, path = spec.partition("=")
        for r in json.loads(Path(path).read_text())["records"]:
            if r.get("target_bpp") in RATES and r.get("psnr") is not None:
                out.append({"image": r["image"], "codec": f"{name}:{r['codec']}", "quality": None,
                            "target_bpp": r["target_bpp"], "bpp": r["bpp"], **{k: r[k] for k in METRICS}})
    return out


def summarize(out: list[Path], only: tuple = (), bench_results: tuple = (), alias: dict | None = None) -> dict:
    """Mean figures per codec and rate over the same images for every codec: those every codec
    measured and, for the models, whose curves bracket the rate (paired, not each on its own)."""
    recs = [json.loads(line) for d in out for line in (Path(d) / "points.jsonl").read_text().splitlines()]
    recs += _bench_records(bench_results)
    by: dict = {}
    for r in recs:
        if not only or r["codec"] in only:
            by.setdefault((alias or {}).get(r["codec"], r["codec"]), []).append(r)
    res: dict = {"rates": {}}
    for b in RATES:
        table: dict = {}  # codec -> image -> {metric: value}
        for codec, rs in by.items():
            per_img: dict = {}
            for r in rs:
                per_img.setdefault(r["image"], []).append(r)
            keys = METRICS + (tuple(f"nodiff_{m}" for m in METRICS) if all("nodiff_psnr" in r for r in rs) else ())
            for im, img_rs in per_img.items():
                if img_rs[0]["quality"] is None:  # conventional, or a model with --at-rates: measured at the rate
                    hit = [r for r in img_rs if r["target_bpp"] == b]
                    got = {k: hit[0][k] for k in keys + ("bpp",)} if hit else None
                else:
                    got = {k: _interp([(r["bpp"], r[k]) for r in img_rs], b) for k in keys}
                    got["bpp"] = b
                if got and None not in got.values():
                    table.setdefault(codec, {})[im] = got
        common = set.intersection(*(set(v) for v in table.values())) if table else set()
        row = {}
        for codec, imgs in table.items():
            vals = [imgs[im] for im in sorted(common)]
            if vals:
                row[codec] = {"n": len(vals), **{k: float(np.mean([v[k] for v in vals])) for k in vals[0]}}
        res["rates"][f"{b:g}"] = row
        res.setdefault("images", {})[f"{b:g}"] = sorted(common)
    # decode time of a model: seconds per megapixel (its diffusion steps), over every point measured
    res["decode"] = {c: {"s_per_mp": float(np.mean([r["decode_s"] / r["pixels"] * 1e6 for r in rs])),
                         "cpu_s_per_mp": float(np.mean([r["decode_cpu_s"] / r["pixels"] * 1e6 for r in rs]))}
                     for c, rs in by.items() if all("decode_s" in r for r in rs)}
    res["per_image"] = _per_image(by)
    return res


def _per_image(by: dict) -> dict:
    """Per image and rate, each model's and each codec's MS-SSIM (for 'better on N of M')."""
    out: dict = {}
    for codec, rs in by.items():
        per_img = {}
        for r in rs:
            per_img.setdefault(r["image"], []).append(r)
        for im, img_rs in per_img.items():
            for b in RATES:
                if img_rs[0]["quality"] is None:
                    v = next((r["ms_ssim"] for r in img_rs if r["target_bpp"] == b), None)
                else:
                    v = _interp([(r["bpp"], r["ms_ssim"]) for r in img_rs], b)
                out.setdefault(f"{b:g}", {}).setdefault(im, {})[codec] = v
    return out


def _label(codec: str) -> str:
    """'r3@0.25' -> 'release 3, t_scale 0.25'; 'r2:webp' (an earlier bench run's codec) -> 'WebP'."""
    name, _, inner = codec.partition(":")
    base, _, ts = name.partition("@")
    rel = f"release {base[1:]}" if base[:1] == "r" and base[1:].replace(".", "", 1).isdigit() else base
    if inner:
        return {"ours": rel, "ours-nodiff": f"{rel}, no diffusion", "avif": "AVIF", "webp": "WebP", "jpeg": "JPEG",
                "jxl": "JPEG XL"}.get(inner, inner)
    return {"avif": "AVIF", "webp": "WebP", "jpeg": "JPEG", "jxl": "JPEG XL"}.get(codec, rel + (f", t_scale {ts}" if ts else ""))


def plot(out: list[Path], png: Path, title: str, only: tuple = (), bench_results: tuple = (),
         alias: dict | None = None) -> None:
    """Rate–quality curves: each model's points averaged per quality, conventional codecs per rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = summarize(out, only, bench_results, alias)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    codecs = sorted({c for row in res["rates"].values() for c in row})
    for ax, k, label in zip(axes, METRICS, ("PSNR (dB) ↑", "MS-SSIM ↑", "spectral distance ↓")):
        for c in codecs:
            xs = [float(b) for b, row in res["rates"].items() if row.get(c, {}).get(k) is not None]
            ys = [res["rates"][f"{b:g}"][c][k] for b in xs]
            model = c.startswith("r") and ":" not in c or c.endswith(":ours")
            style = "-o" if model else "--s"
            ax.plot([res["rates"][f"{b:g}"][c]["bpp"] for b in xs], ys, style, ms=4, label=_label(c))
            ys2 = [res["rates"][f"{b:g}"][c].get(f"nodiff_{k}") for b in xs]
            if model and ":" not in c and ys2 and None not in ys2:
                ax.plot(xs, ys2, ":", lw=1, label=f"{_label(c).split(',')[0]}, no diffusion")
        ax.set_xlabel("bits per pixel (real file size)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


@cli.command()
@click.argument("out", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--png", type=click.Path(path_type=Path), default=None)
@click.option("--title", default="rate–quality at equal bytes")
@click.option("--only", default="", help="these codecs only (comma-separated): the images they all have")
@click.option("--bench-results", multiple=True, help="NAME=results.json of an `archiver bench` run on the same images")
@click.option("--alias", multiple=True, help="OLD=NEW: report codec OLD under the name NEW (after --only)")
@click.option("--json", "as_json", is_flag=True)
def report(out, png, title, only, bench_results, alias, as_json):
    """Means per codec and rate (and a plot)."""
    only = tuple(c for c in only.split(",") if c)
    alias = dict(a.split("=", 1) for a in alias)
    res = summarize(out, only, bench_results, alias)
    if png:
        plot(out, png, title, only, bench_results, alias)
    if as_json:
        click.echo(json.dumps({k: v for k, v in res.items() if k != "per_image"}, indent=1))
        return
    for b, row in res["rates"].items():
        for c, v in sorted(row.items()):
            nd = "" if v.get("nodiff_psnr") is None else (
                f"  | no diffusion {v['nodiff_psnr']:.2f} dB {v['nodiff_ms_ssim']:.4f} {v['nodiff_spectral_distance']:.3f}")
            click.echo(f"{b} {c:6s} n={v['n']:2d} bpp {v['bpp']:.3f}  {v['psnr']:.2f} dB  MS-SSIM {v['ms_ssim']:.4f}"
                       f"  spectral {v['spectral_distance']:.3f}{nd}")
    for c, d in res["decode"].items():
        click.echo(f"decode {c}: {d['s_per_mp']:.2f} s/MP wall, {d['cpu_s_per_mp']:.2f} CPU-s/MP")


if __name__ == "__main__":
    cli()
