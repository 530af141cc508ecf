#!/usr/bin/env python3
"""The diffusion codec's ceiling per image (issue 27): its latent decoded without quantization,
against every quality's decode, on validation photos from train/ (never kodak/).

Not a test: the evidence for ``codecs.diffusion.codec.CEILING_MARGIN``. The search refuses
without coding when the ceiling's SSIMULACRA2 lies more than that margin below the target, which
is safe only if no quality scores above the ceiling by as much. This measures how much any does
("over"), the ceilings themselves (how often a target is out of reach), and what the ceiling
decode costs.

    python bench/diffusion_ceiling.py --count 20 --out docs/bench/throughput-2026-12-05/diffusion-ceiling.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from encoder_speed import DATA, images, no_data, save_report  # noqa: E402

QUALITIES = (55, 60, 65, 70, 75, 80, 90, 100)


def measure(path: Path, backbone) -> dict:
    """The ceiling's score and CPU seconds, and each quality's score, for one image."""
    from archiver.codecs.diffusion.pipeline import QualityProbe
    from archiver.imageio import load_image
    from archiver.perceptual import ssimulacra2

    img = load_image(path.read_bytes())
    probe = QualityProbe(img, backbone)
    t = time.process_time()
    ceiling = ssimulacra2(img.rgb, probe.ceiling())
    cpu = time.process_time() - t
    scores = {q: round(ssimulacra2(img.rgb, probe.decode(probe.file_at(q)[0]).image), 2) for q in QUALITIES}
    return dict(image=str(path.relative_to(DATA)), pixels=img.width * img.height, ceiling=round(ceiling, 2),
                ceiling_cpu_s=round(cpu, 3), scores=scores, over=round(max(scores.values()) - ceiling, 2))


def plot(rows: list, out: Path) -> None:
    """Each image's score against quality, ending at its ceiling (a dot at the right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        qs = sorted(int(q) for q in r["scores"])
        ax.plot(qs, [r["scores"][q] if q in r["scores"] else r["scores"][str(q)] for q in qs], color="tab:blue",
                alpha=0.35, lw=1)
        ax.plot([104], [r["ceiling"]], "o", color="tab:red", ms=3)
    for target in (70, 90):
        ax.axhline(target, color="black", lw=0.8, ls="--")
        ax.text(56, target + 0.8, f"target {target}", fontsize=8)
    ax.set_xlabel("quality (the red dots at the right: the same image's latent decoded without quantization)")
    ax.set_ylabel("SSIMULACRA2")
    ax.set_ylim(max(-30, min(r["ceiling"] for r in rows) - 30), 100)
    ax.set_title(f"Diffusion codec (embedded model): score by quality, {len(rows)} validation photos")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    from archiver.codecs import get_codec

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20, help="images from each validation folder")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    if no_data():
        return 2
    backbone = get_codec("diffusion").backbone
    rows = []
    files = images(a.count)
    for i, path in enumerate(files):
        rows.append(measure(path, backbone))
        r = rows[-1]
        print(f"{i + 1}/{len(files)} {path.name}: ceiling {r['ceiling']:.1f}, the best quality {r['over']:+.2f} above it",
              file=sys.stderr, flush=True)
    ceilings = sorted(r["ceiling"] for r in rows)
    summary = dict(images=len(rows), over_max=max(r["over"] for r in rows),
                   ceiling_median=ceilings[len(ceilings) // 2],
                   **{f"ceiling_below_{t}": sum(c < t - 1.0 for c in ceilings) for t in (50, 70, 90)},
                   ceiling_cpu_s_mean=round(sum(r["ceiling_cpu_s"] for r in rows) / len(rows), 3),
                   ceiling_cpu_s_per_mp=round(sum(r["ceiling_cpu_s"] for r in rows)
                                              / sum(r["pixels"] for r in rows) * 1e6, 3))
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    save_report(a.out, [summary], rows)
    if a.out:
        plot(rows, a.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
