#!/usr/bin/env python3
"""How many encodes the AVIF and JPEG XL searches take to find the smallest file at a target, with
the search in this checkout against another one's (issue 27): the probes per image, and whether
both end on the same file.

Not a test: the evidence for ``conventional.smallest_passing``. Both searches run on the same
encodes (each quality setting is encoded and scored once, then shared), so the comparison costs
the union of their probes. Decide on train/ images only, never on kodak/.

    python bench/search_probes.py --before /path/to/old/archiver/codecs/conventional.py --count 15
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def load_search(path: Path):
    """``smallest_passing`` from another checkout's ``archiver/codecs/conventional.py``."""
    spec = importlib.util.spec_from_file_location("archiver.codecs._conventional_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.smallest_passing


def run(search, codec, src, score: float, memo: dict) -> tuple[int, int, int]:
    """(probes, chosen quality, chosen bytes) of one search; ``memo`` shares encodes and scores."""
    from archiver.codecs import Target
    from archiver.codecs.conventional import first_guess, judge, typical_slope

    target = Target(floor={"min_ssimulacra2": score})
    options = codec.save_options(target)
    seen: set[int] = set()

    def verdict(q: int):
        seen.add(q)
        if q not in memo:
            data = codec.encode_at(src.image, q, options)
            memo[q] = (len(data), judge(src, codec.decode(data), target))
        return memo[q][1]

    lo, hi = codec.quality_range
    kwargs = dict(guess=first_guess(score, lo, hi, codec.typical_quality), score_at=lambda q: verdict(q).score,
                  target=score)
    try:
        search(lambda q: verdict(q).ok, lo, hi, slope=typical_slope(codec.typical_quality), **kwargs)
    except TypeError:  # a search without ``slope``
        search(lambda q: verdict(q).ok, lo, hi, **kwargs)
    passing = [q for q in seen if memo[q][1].ok]
    if not passing:
        return len(seen), -1, -1
    q = min(passing, key=lambda k: (memo[k][0], k))
    return len(seen), q, memo[q][0]


def main(argv=None) -> int:
    from archiver.codecs import Source, get_codec
    from archiver.codecs.conventional import smallest_passing
    from archiver.imageio import load_image
    from encoder_speed import images, no_data, save_report

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="the other checkout's archiver/codecs/conventional.py")
    ap.add_argument("--count", type=int, default=15, help="images from each validation folder")
    ap.add_argument("--targets", default="70,90")
    ap.add_argument("--codecs", default="avif,jxl")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    if no_data():
        return 2
    before = load_search(a.before)
    rows = []
    files = images(a.count)
    for i, path in enumerate(files):
        data = path.read_bytes()
        src = Source(load_image(data), data)
        for name in a.codecs.split(","):
            codec = get_codec(name)
            for score in (float(t) for t in a.targets.split(",")):
                memo: dict = {}
                pb, qb, bb = run(before, codec, src, score, memo)
                pa, qa, ba = run(smallest_passing, codec, src, score, memo)
                rows.append(dict(image=path.name, codec=name, target=score, probes_before=pb, probes_after=pa,
                                 quality_before=qb, quality_after=qa, bytes_before=bb, bytes_after=ba))
        print(f"{i + 1}/{len(files)} {path.name}", file=sys.stderr, flush=True)
    summary = []
    for name in a.codecs.split(","):
        for score in (float(t) for t in a.targets.split(",")):
            r = [x for x in rows if x["codec"] == name and x["target"] == score]
            summary.append(dict(codec=name, target=score, images=len(r),
                                probes_before=round(statistics.mean(x["probes_before"] for x in r), 2),
                                probes_after=round(statistics.mean(x["probes_after"] for x in r), 2),
                                same_file=sum(x["bytes_before"] == x["bytes_after"] for x in r),
                                bytes_after_vs_before=round(sum(x["bytes_after"] for x in r) / max(1, sum(x["bytes_before"] for x in r)), 5)))
    for s in summary:
        print(f"{s['codec']:4} target {s['target']:g}: probes {s['probes_before']} -> {s['probes_after']}, "
              f"same file {s['same_file']}/{s['images']}, bytes x{s['bytes_after_vs_before']}")
    save_report(a.out, summary, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
