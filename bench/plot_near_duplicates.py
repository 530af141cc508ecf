"""Draw ``bench/near_duplicates.py``'s distances as histograms: how far (in bits) each kind of
copy of a train/ image lands from it, against the distances between distinct images, with the
chosen thresholds marked; the picture behind the near-duplicate threshold (docs/operations.md).

    python bench/plot_near_duplicates.py docs/bench/near-duplicates-2026-12-05.json --out docs/bench/near-duplicates-2026-12-05.png
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="JSON written by bench/near_duplicates.py")
    ap.add_argument("--out", required=True, help="PNG to write")
    a = ap.parse_args(argv)
    d = json.load(open(a.report))
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    kinds = [k for k in ("resize50", "jpeg70", "crop3", "crop6") if k in d["positive_histograms"]]
    def binned(xs, w):
        return [sum(xs[i:i + w]) for i in range(0, len(xs), w)]

    for ax, h in zip(axes, ("phash", "dhash")):
        limit = d["chosen"][f"{h}_max"]
        w = 2 if h == "phash" else 1  # imagehash's pHash distances come out even: bins of 2 bits
        neg = binned(d["negative_histograms"][h], w)
        total = sum(neg)
        ax.bar([i * w + (w - 1) / 2 for i in range(len(neg))], [n / total for n in neg], color="0.6", width=w,
               label=f"distinct images ({total:,} pairs)")
        for k in kinds:
            pos = binned(d["positive_histograms"][k][h], w)
            n = sum(pos)
            ax.step([i * w + (w - 1) / 2 for i in range(len(pos))], [x / n for x in pos], where="mid",
                    label=f"copy: {k} ({n:,})")
        ax.axvline(limit + 0.5, color="crimson", linestyle="--", label=f"threshold: <= {limit} bits")
        ax.set_yscale("log")
        ax.set_xlim(-0.5, 40)
        ax.set_xlabel(f"{h} distance to the original (bits of 64{', bins of 2' if w == 2 else ''})")
        ax.set_ylabel("share of pairs (log)")
        ax.set_title(h)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Near duplicates on train/ ({d['images']:,} images): false matches "
                 f"{d['chosen']['false_matches']} of {d['chosen']['negative_pairs']:,} distinct pairs")
    fig.tight_layout()
    fig.savefig(a.out, dpi=100)
    print(f"drawn: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
