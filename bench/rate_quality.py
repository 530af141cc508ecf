#!/usr/bin/env python
"""Reproduce the published rate-quality benchmark (docs/benchmarks.md, docs/bench/).

Runs `archiver bench` with the published settings on Kodak (../shared/data/kodak by default)
and writes results.json, summary.md, the rate-quality plots and a few crop sheets to --out.
The same numbers come from the CLI:

    archiver bench ../shared/data/kodak --bpp 0.1,0.2,0.3 --codecs CODECS --crops 2 --out DIR

Slow on a laptop CPU for the diffusion codec (tens of seconds per image and rate): use --limit
to run ours on the first N images, as the published table says when it does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.bench.codecs import ALL_CODECS  # noqa: E402
from archiver.bench.runner import BenchConfig, run_bench  # noqa: E402
from archiver.errors import ArchiverError  # noqa: E402

PUBLISHED_BPPS = (0.1, 0.2, 0.3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "kodak")
    ap.add_argument("--codecs", default=",".join(ALL_CODECS))
    ap.add_argument("--bpp", default=",".join(str(b) for b in PUBLISHED_BPPS))
    ap.add_argument("--steps", type=int, default=None, help="diffusion steps at decode (codec default if omitted)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--crops", type=int, default=2, help="crop sheets for the first N images")
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--model", default=None, help="weights directory (default: the shipped tiny weights)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    ap.add_argument("--render", action="store_true",
                    help="only re-render summary.md and the plots from --out/results.json (no measuring)")
    a = ap.parse_args(argv)
    if a.render:
        import json

        from archiver.bench.report import render

        result = json.loads((a.out / "results.json").read_text())
        render(result, a.out)
        print(f"re-rendered {a.out}")
        return 0
    if not a.data.is_dir():
        print(f"rate_quality: data directory {a.data} not found (Kodak lives in ../shared/data/kodak)", file=sys.stderr)
        return 3
    cfg = BenchConfig(images=a.data, bpps=tuple(float(b) for b in a.bpp.split(",")),
                      codecs=tuple(c.strip() for c in a.codecs.split(",")), steps=a.steps, limit=a.limit,
                      out=a.out, crop_images=a.crops, backbone=a.backbone, model_path=a.model)
    try:
        result = run_bench(cfg)
    except ArchiverError as e:
        print(f"rate_quality: {e}", file=sys.stderr)
        return e.exit_code
    for codec, why in result["unavailable"].items():
        print(f"{codec}: not measured ({why})")
    for v in result["verdicts"]:
        print(f"{v['target_bpp']} bpp: ours " + "; ".join(v["text"]))
    print(f"wrote {a.out} ({len(result['records'])} measurements, {result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
