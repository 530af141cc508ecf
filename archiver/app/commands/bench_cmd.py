"""``archiver bench``: rate-quality-speed benchmark of the diffusion codec against conventional codecs."""

from __future__ import annotations

from pathlib import Path

import click

from ...errors import UsageError
from ..output import emit, progress
from ...bench.codecs import ALL_CODECS


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--bpp: expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise UsageError("--bpp: give at least one target rate")
    return vals


def _codecs(text: str) -> tuple[str, ...]:
    names = tuple(x.strip().lower() for x in text.split(",") if x.strip())
    bad = [n for n in names if n not in ALL_CODECS]
    if bad or not names:
        raise UsageError(f"--codecs: unknown {', '.join(bad) or '(none given)'} (known: {', '.join(ALL_CODECS)})")
    return names


def _human(result: dict) -> str:
    from ...bench.report import fmt_number  # heavy: bench.report (~8 ms), not loaded by archiver --help

    lines = [f"{result['config']['n_images']} images, {len(result['records'])} measurements in {result['seconds']:.0f} s"]
    lines.append(f"{'rate':>6} {'codec':<12} {'bpp':>6} {'PSNR':>6} {'MS-SSIM':>8} {'spectral':>9} {'LPIPS':>6} {'enc s/MP':>9} {'dec s/MP':>9}")
    for r in result["summary"]:
        rate = "-" if r["target_bpp"] is None else str(r["target_bpp"])
        lines.append(f"{rate:>6} {r['codec']:<12} {fmt_number(r['bpp']):>6} {fmt_number(r['psnr'], 2):>6} {fmt_number(r['ms_ssim'], 4):>8} "
                     f"{fmt_number(r['spectral_distance'], 4):>9} {fmt_number(r['lpips'], 3):>6} {fmt_number(r['encode_s_per_mp']):>9} "
                     f"{fmt_number(r['decode_s_per_mp']):>9}")
    lines.append(f"LPIPS: {result['metrics']['lpips']}")
    lines.append(f"FID: {result['metrics']['fid']}")
    for codec, why in result["unavailable"].items():
        lines.append(f"{codec}: not measured ({why})")
    for f in result.get("failures", []):
        lines.append(f"FAILED {f['codec']} on {f['image']} at {f['target_bpp']} bpp: {f['error']}")
    for s in result["skipped"]:
        lines.append(f"skipped {s['image']}: {s['reason']}")
    for v in result["verdicts"]:
        lines.append(f"{v['target_bpp']} bpp: ours " + "; ".join(v["text"]))
    if result.get("files"):
        lines.append(f"wrote {result['config']['out']}: {result['files']['json']}, {result['files']['summary']}, "
                     f"{len(result['files']['plots'])} plots, {len(result['files']['crops'])} crop sheets")
    return "\n".join(lines)


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--bpp", "bpp", default="0.1,0.2,0.3", show_default=True, help="Target rates, comma-separated.")
@click.option("--codecs", default=",".join(ALL_CODECS), show_default=True, help="Codecs, comma-separated.")
@click.option("--steps", type=click.IntRange(min=0), default=None, help="Diffusion steps at decode (default: the codec's).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N images (sorted by name).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write results.json, summary.md, plots and crops here.")
@click.option("--crops", "crop_images", type=click.IntRange(min=0), default=3, show_default=True,
              help="Side-by-side crop sheets for the first N images.")
@click.option("--backbone", default="tiny", show_default=True, help="Backbone for ours/ours-nodiff/ae (tiny-random: untrained, to check the harness).")
@click.option("--model", "model_path", default=None,
              help="Weights directory for tiny (default: the shipped ones) or model directory for diffusers.")
@click.option("--device", default="cpu", show_default=True, help="Torch device for ours.")
@click.option("--adapter", default=None, help="Adapter folder for the diffusers model (docs/stable-diffusion.md).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench(directory, bpp, codecs, steps, limit, out, crop_images, backbone, model_path, device, adapter, as_json):
    """Benchmark every image in DIRECTORY at each target rate: real bpp, PSNR, MS-SSIM, spectral
    distance (LPIPS/FID only with local weights), encode/decode s per megapixel and peak memory."""
    from ...bench.runner import BenchConfig, run_bench  # heavy: torch (bench.runner), not loaded by archiver --help

    cfg = BenchConfig(images=directory, bpps=_floats(bpp), codecs=_codecs(codecs), steps=steps, limit=limit,
                      out=out, crop_images=crop_images, backbone=backbone, model_path=model_path, device=device, adapter=adapter,
                      show_progress=not as_json, progress=progress)
    result = run_bench(cfg)
    emit(result, as_json, _human)
