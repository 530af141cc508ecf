"""Draw a profile from ``bench/profile_migrate.py`` as stacked bars, one per run mode (real run,
dry run): CPU samples per step, split into its parts, so that where a migrate's time goes is seen
at a glance.

    python bench/plot_profile.py docs/bench/throughput-2026-12-05/profile-bsds8.json --out docs/bench/throughput-2026-12-05/profile-bsds8.png
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", help="JSON written by bench/profile_migrate.py")
    ap.add_argument("--out", required=True, help="PNG to write")
    a = ap.parse_args(argv)
    d = json.load(open(a.profile))
    runs = d["results"]
    steps = sorted({s for r in runs for s in r["steps"]},
                   key=lambda s: -max(r["steps"].get(s, {}).get("samples", 0) for r in runs))
    fig = Figure(figsize=(10, 1.2 + 0.9 * len(runs) * 2))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab20"]
    y = 0
    labels = []
    for r in runs:
        secs_per_sample = 1.0 / r["rate_hz"]
        per_image = 1.0 / r["images"]
        left = 0.0
        for i, s in enumerate(steps):
            n = r["steps"].get(s, {}).get("samples", 0) * secs_per_sample * per_image
            if n <= 0:
                continue
            ax.barh(y, n, left=left, color=cmap(i % 20), edgecolor="white", label=s if y == 0 else None)
            if n > 0.25:
                ax.text(left + n / 2, y, f"{s}\n{n:.1f}s", ha="center", va="center", fontsize=7)
            left += n
        labels.append(f"{r['mode']}\n{r['images']} images, load {r['loadavg_before'][0]:.1f}")
        y += 1
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("sampled seconds per image (py-spy, all processes; under load this includes waiting for a core)")
    ax.set_title("Where a migrate's time goes, per step")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"drawn: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
