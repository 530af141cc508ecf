"""What a benchmark run leaves behind: results.json, summary.md (means per codec and rate, with
plain-worded verdicts), rate-quality plots, and labelled side-by-side crops."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import fmean

from PIL import Image, ImageDraw, ImageFont

from ..text import to_json

FIELDS = ("bpp", "psnr", "ms_ssim", "spectral_distance", "lpips", "encode_s_per_mp", "decode_s_per_mp",
          "encode_peak_mib", "decode_peak_mib", "autoencode_s_per_mp", "autoencode_peak_mib")
#: (record field, axis label, higher is better)
PLOTS = (
    ("psnr", "PSNR (dB) ↑", True),
    ("ms_ssim", "MS-SSIM ↑", True),
    ("spectral_distance", "spectral distance (log10 power RMS) ↓", False),
    ("lpips", "LPIPS ↓", False),
)
CODEC_ORDER = ("ours", "ours-nodiff", "ae", "jpeg", "webp", "avif", "jxl")
#: fixed colours so a codec looks the same in every plot
STYLE = {
    "ours": dict(color="tab:red", lw=2.2),
    "ours-nodiff": dict(color="tab:purple", lw=1.6, ls="--"),
    "jpeg": dict(color="tab:blue"),
    "webp": dict(color="tab:green"),
    "avif": dict(color="tab:olive"),
    "jxl": dict(color="tab:cyan"),
}


def _order(codec: str) -> int:
    return CODEC_ORDER.index(codec) if codec in CODEC_ORDER else len(CODEC_ORDER)


def summarize(records: list[dict]) -> list[dict]:
    """Mean of every figure per (codec, target rate); PSNR means skip identical (inf) pairs."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["codec"], r["target_bpp"]), []).append(r)
    rows = []
    for (codec, target), rs in sorted(groups.items(), key=lambda kv: (_order(kv[0][0]), kv[0][1] or 0)):
        row = {"codec": codec, "target_bpp": target, "n": len(rs)}
        for f in FIELDS:
            vals = [r[f] for r in rs if r.get(f) is not None]
            row[f] = fmean(vals) if vals else None
        rows.append(row)
    return rows


def _row(summary, codec, target):
    return next((r for r in summary if r["codec"] == codec and r["target_bpp"] == target), None)


def _wins(records, b, field, ours, other, lower_better=False) -> tuple[int, int]:
    """Images where ``ours`` is better than ``other`` on ``field`` at target ``b``: (wins, pairs)."""
    mine = {r["image"]: r[field] for r in records or () if r["codec"] == ours and r["target_bpp"] == b}
    theirs = {r["image"]: r[field] for r in records or () if r["codec"] == other and r["target_bpp"] == b}
    pairs = [(mine[i], theirs[i]) for i in mine.keys() & theirs.keys() if mine[i] is not None and theirs[i] is not None]
    wins = sum((m < t) if lower_better else (m > t) for m, t in pairs)
    return wins, len(pairs)


def verdicts(summary: list[dict], bpps, records: list[dict] | None = None) -> list[dict]:
    """Per rate: does ours (with diffusion) beat JPEG and WebP on MS-SSIM, and is it closer to the
    original's spectrum than ours-nodiff? Real bpps are quoted so a win at a higher rate is visible."""
    out = []
    for b in bpps:
        ours = _row(summary, "ours", b)
        if ours is None:
            continue
        v = {"target_bpp": b, "ours_bpp": ours["bpp"], "ours_ms_ssim": ours["ms_ssim"], "text": []}
        for other in ("jpeg", "webp"):
            o = _row(summary, other, b)
            if o is None:
                continue
            beats = ours["ms_ssim"] > o["ms_ssim"]
            v[f"beats_{other}_ms_ssim"] = beats
            v[f"{other}_ms_ssim"] = o["ms_ssim"]
            v[f"{other}_bpp"] = o["bpp"]
            w, n = _wins(records, b, "ms_ssim", "ours", other)
            v[f"wins_vs_{other}_ms_ssim"] = [w, n]
            # a win bought with >10% more bits is not a like-for-like win: say so
            unfair = beats and ours["bpp"] > 1.1 * o["bpp"]
            v[f"beats_{other}_at_no_higher_rate"] = beats and not unfair
            v["text"].append(
                f"{'beats (but only at a higher real rate)' if unfair else 'beats' if beats else 'does NOT beat'} "
                f"{other.upper()} on mean MS-SSIM "
                f"({ours['ms_ssim']:.4f} at {ours['bpp']:.3f} bpp vs {o['ms_ssim']:.4f} at {o['bpp']:.3f} bpp"
                + (f"; better on {w} of {n} images)" if n else ")"))
        nd = _row(summary, "ours-nodiff", b)
        if nd is not None:
            closer = ours["spectral_distance"] < nd["spectral_distance"]
            v["closer_spectrum_than_nodiff"] = closer
            v["nodiff_spectral_distance"] = nd["spectral_distance"]
            v["ours_spectral_distance"] = ours["spectral_distance"]
            w, n = _wins(records, b, "spectral_distance", "ours", "ours-nodiff", lower_better=True)
            v["wins_vs_nodiff_spectral"] = [w, n]
            v["text"].append(
                f"is {'closer to' if closer else 'NOT closer to'} the original's spectrum than ours-nodiff "
                f"(mean spectral distance {ours['spectral_distance']:.4f} vs {nd['spectral_distance']:.4f}"
                + (f"; closer on {w} of {n} images)" if n else ")"))
        out.append(v)
    return out


def fmt_number(x, nd=3):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{nd}f}"


def markdown(result: dict, plots: list[str] | None = None, crops: list[str] | None = None) -> str:
    cfg, m, summary = result["config"], result["metrics"], result["summary"]
    n = result.get("images_done", cfg["n_images"]) if result.get("partial") else cfg["n_images"]
    lines = [
        "# Benchmark summary",
        "",
        *([f"**Partial run: {n} of {cfg['n_images']} images finished.**", ""] if result.get("partial") else []),
        f"{n} images from `{cfg['images']}`, target rates {', '.join(str(b) for b in cfg['bpps'])} bpp, "
        f"codecs {', '.join(cfg['codecs'])}, diffusion steps {cfg['steps'] if cfg['steps'] is not None else 'codec default'}.",
        "Means over images. bpp is the real file size; conventional codecs use the quality setting whose "
        "real bpp is nearest the target (a codec that cannot go that low shows its lowest rate).",
        "",
        f"- LPIPS: {m['lpips']}",
        f"- FID: {m['fid']}",
        f"- memory: {m['memory']}",
    ]
    for codec, why in result.get("unavailable", {}).items():
        lines.append(f"- `{codec}`: not measured — {why}")
    for s in result.get("skipped", []):
        lines.append(f"- skipped {s['image']}: {s['reason']}")
    for f in result.get("failures", []):
        lines.append(f"- FAILED {f['codec']} on {f['image']} at {f['target_bpp']} bpp: {f['error']}")
    notes = [r for r in result.get("records", []) if r["codec"] == "ours" and r.get("rate_note")]
    if notes:
        lines.append(f"- ours' rate control could not land near the target for {len(notes)} image/rate pair(s), e.g. "
                     f"{notes[0]['image']} at {notes[0]['target_bpp']} bpp: {notes[0]['rate_note']}")
    head = ("| codec | n | bpp | PSNR dB | MS-SSIM | spectral ↓ | LPIPS ↓ | enc s/MP | dec s/MP | enc peak MiB | dec peak MiB |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    for b in cfg["bpps"]:
        rows = [r for r in summary if r["target_bpp"] == b]
        if not rows:
            continue
        lines += ["", f"## {b} bpp", "", head]
        for r in rows:
            lines.append(
                f"| {r['codec']} | {r['n']} | {fmt_number(r['bpp'])} | {fmt_number(r['psnr'], 2)} | {fmt_number(r['ms_ssim'], 4)} | "
                f"{fmt_number(r['spectral_distance'], 4)} | {fmt_number(r['lpips'], 4)} | {fmt_number(r['encode_s_per_mp'])} | "
                f"{fmt_number(r['decode_s_per_mp'])} | {fmt_number(r['encode_peak_mib'], 1)} | {fmt_number(r['decode_peak_mib'], 1)} |")
    ae = _row(summary, "ae", None)
    if ae:
        lines += ["", "## Autoencoder alone (no quantization: the ceiling for ours)", "",
                  "| codec | n | PSNR dB | MS-SSIM | spectral ↓ | LPIPS ↓ | enc+dec s/MP | peak MiB |", "|---|---|---|---|---|---|---|---|",
                  f"| ae | {ae['n']} | {fmt_number(ae['psnr'], 2)} | {fmt_number(ae['ms_ssim'], 4)} | {fmt_number(ae['spectral_distance'], 4)} | "
                  f"{fmt_number(ae['lpips'], 4)} | {fmt_number(ae['autoencode_s_per_mp'])} | {fmt_number(ae['autoencode_peak_mib'], 1)} |"]
    if result.get("fid"):
        lines += ["", "## Patch FID", "", "| codec@rate | FID |", "|---|---|"]
        lines += [f"| {k} | {fmt_number(v, 2)} |" for k, v in result["fid"].items()]
    if result.get("verdicts"):
        lines += ["", "## Verdicts (ours = diffusion decode)", ""]
        for v in result["verdicts"]:
            lines.append(f"- **{v['target_bpp']} bpp**: ours " + "; ".join(v["text"]) + ".")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    if crops:
        lines += ["", "## Crops (2x nearest; left to right as labelled)", ""] + [f"![{Path(p).stem}]({p})" for p in crops]
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], field: str, label: str, path: Path, title: str = "") -> bool:
    """One curve per codec (mean real bpp vs mean metric); the autoencoder ceiling as a dashed line."""
    import matplotlib  # heavy: matplotlib, slow to import, only for plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: matplotlib, slow to import, only for plots

    codecs = sorted({r["codec"] for r in summary}, key=_order)
    if not any(r.get(field) is not None for r in summary):
        return False
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=100)
    for c in codecs:
        rows = [r for r in summary if r["codec"] == c and r.get(field) is not None]
        if not rows:
            continue
        if c == "ae":
            ax.axhline(rows[0][field], ls="--", color="grey", lw=1, label="ae (no quantization)")
            continue
        rows.sort(key=lambda r: r["bpp"])
        ax.plot([r["bpp"] for r in rows], [r[field] for r in rows], marker="o", ms=4, label=c, **STYLE.get(c, {}))
    ax.set_xlabel("bits per pixel (real file size)")
    ax.set_ylabel(label)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def crop_sheet(entry: dict, image: str, target: float, scale: int = 2, cols: int = 4) -> Image.Image:
    """Original and every codec's reconstruction of the same region, upscaled with nearest
    neighbour (so pixels stay pixels), each labelled with codec, real bpp, PSNR and MS-SSIM."""
    tiles = [("original", entry["original"], f"{image}", "")]
    for codec in sorted((k for k in entry if k not in ("original", "box")), key=_order):
        crop, r = entry[codec]
        rate = "no quantization" if r["bpp"] is None else f"{r['bpp']:.3f} bpp"
        psnr = "inf" if r["psnr"] is None else f"{r['psnr']:.2f}"
        tiles.append((codec, crop, rate, f"PSNR {psnr}  MS-SSIM {r['ms_ssim']:.3f}"))
    w, h = entry["original"].size
    tw, th, bar = w * scale, h * scale, 44
    cols = min(cols, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (cols * tw + (cols - 1) * 4, rows * (th + bar) + (rows - 1) * 4), "white")
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # pragma: no cover - Pillow without FreeType
        font = ImageFont.load_default()
    for i, (name, im, l1, l2) in enumerate(tiles):
        x, y = (i % cols) * (tw + 4), (i // cols) * (th + bar + 4)
        sheet.paste(im.resize((tw, th), Image.NEAREST), (x, y))
        draw.text((x + 4, y + th + 4), f"{name}  {l1}" if name != "original" else f"original  {l1}  (target {target} bpp)",
                  fill="black", font=font)
        draw.text((x + 4, y + th + 23), l2, fill="black", font=font)
    return sheet


def _title(result: dict) -> str:
    cfg = result["config"]
    n = result.get("images_done", cfg["n_images"]) if result.get("partial") else cfg["n_images"]
    return f"{Path(cfg['images']).name}: {n} images (means)"


def render(result: dict, out: Path, crop_files: list[str] | None = None) -> dict:
    """Plots, summary.md and results.json from a result (also re-renders a saved results.json)."""
    out.mkdir(parents=True, exist_ok=True)
    result["summary"] = summarize(result["records"])
    result["verdicts"] = verdicts(result["summary"], result["config"]["bpps"], result["records"])
    plots = []
    for field, label, _ in PLOTS:
        p = out / f"rate_{field}.png"
        if plot(result["summary"], field, label, p, _title(result)):
            plots.append(p.name)
        elif p.exists():
            p.unlink()
    crop_files = crop_files if crop_files is not None else sorted(
        str(p.relative_to(out)) for p in (out / "crops").glob("*.png")) if (out / "crops").is_dir() else []
    files = {"json": "results.json", "summary": "summary.md", "plots": plots, "crops": crop_files}
    (out / "summary.md").write_text(markdown(result, plots, crop_files))
    result["files"] = files
    (out / "results.json").write_text(to_json(result) + "\n")
    return files


def write_crops(crops: dict, out: Path, only_image: str | None = None) -> list[str]:
    """Crop sheets (one per image and rate) under out/crops; names relative to ``out``."""
    files = []
    for (image, target), entry in sorted(crops.items()):
        if len(entry) <= 2 or (only_image and image != only_image):  # no codec produced this one
            continue
        (out / "crops").mkdir(parents=True, exist_ok=True)
        p = out / "crops" / f"{Path(image).stem}_{target}bpp.png"
        crop_sheet(entry, image, target).save(p, optimize=True)
        files.append(str(p.relative_to(out)))
    return files


def write_outputs(result: dict, crops: dict, out: Path) -> dict:
    """Everything a run leaves in ``out``; file names in the result are relative to it."""
    out.mkdir(parents=True, exist_ok=True)
    return render(result, out, write_crops(crops, out))
