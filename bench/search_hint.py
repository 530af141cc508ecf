#!/usr/bin/env python3
"""Where AVIF's search should start once JPEG XL's has found its quality for the same target
(issue 27): a line per target, fitted on one set of validation photos and checked on another.

Not a test: the evidence for ``AvifCodec.guided_by``. Both codecs' searches find the smallest
quality that reaches a SSIMULACRA2 target, and a photo that is hard for one is hard for the
other, so JPEG XL's quality (its search is the cheaper one) predicts AVIF's. A better start
takes fewer probes; the search still proves its answer, so the stored file does not change.

- fit: the photos of ``encoder_speed.images`` (every k-th of BSDS500 val and the ImageNet
  sample), both searches, a least-squares line AVIF quality = a * JPEG XL quality + b per target;
- check: other photos of the same folders (half a step further on), AVIF searched from its
  usual start and from the line's, on the same encoder: probes, qualities, bytes and CPU.

    python bench/search_hint.py --count 30 --check 15 --out docs/bench/throughput-2026-12-05/search-hint.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from encoder_speed import DATA, FOLDERS, folder_photos, images, no_data, save_report  # noqa: E402

TARGETS = (70.0, 90.0)


def check_images(count: int, fit_count: int) -> list[Path]:
    """``count`` photos from each folder, half a step after those of ``images(fit_count)`` (so
    none of them)."""
    out = []
    for folder in FOLDERS:
        files = folder_photos(folder)
        step = max(2, len(files) // fit_count)
        out += files[step // 2::step][:count]
    return out


def source(path: Path):
    from archiver.codecs import Source
    from archiver.imageio import load_image

    data = path.read_bytes()
    return Source(load_image(data), data)


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a x + b."""
    mx, my = statistics.mean(xs), statistics.mean(ys)
    a = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return a, my - a * mx


def main(argv=None) -> int:
    from archiver.codecs import Target, get_codec

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=30, help="fit: photos from each validation folder")
    ap.add_argument("--check", type=int, default=15, help="check: other photos from each folder")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    if no_data():
        return 2
    fit_files = images(a.count)
    check_files = [p for p in check_images(a.check, a.count) if p not in set(fit_files)]
    avif, jxl = get_codec("avif"), get_codec("jxl")
    pairs: dict[float, list[tuple[int, int]]] = {t: [] for t in TARGETS}
    for i, path in enumerate(fit_files):
        src = source(path)
        for t in TARGETS:
            target = Target(floor={"min_ssimulacra2": t})
            pairs[t].append((jxl.encode(src, target).params["quality"], avif.encode(src, target).params["quality"]))
        print(f"fit {i + 1}/{len(fit_files)} {path.name}", file=sys.stderr, flush=True)
    lines = {t: fit([float(x) for x, _ in v], [float(y) for _, y in v]) for t, v in pairs.items()}
    type(avif).guided_by = {"jxl": {t: (round(a_, 3), round(b_, 2)) for t, (a_, b_) in lines.items()}}  # the fitted lines
    rows = []
    for i, path in enumerate(check_files):
        src = source(path)
        for t in TARGETS:
            target = Target(floor={"min_ssimulacra2": t})
            qj = jxl.encode(src, target).params["quality"]
            guided = Target(floor=target.floor, hints={"jxl": qj})
            runs = {}
            order = (("usual", target), ("from JPEG XL", guided))
            for how, tg in order if i % 2 == 0 else order[::-1]:  # alternate which runs first (warm caches)
                c = time.process_time()
                enc = avif.encode(src, tg)
                runs[how] = dict(quality=enc.params["quality"], bytes=enc.size, probes=len(enc.params["probes"]),
                                 cpu_s=round(time.process_time() - c, 4))
            rows.append(dict(image=str(path.relative_to(DATA)), target=t, jxl_quality=qj,
                             guess=avif.first_guess_for(guided), **runs))
        print(f"check {i + 1}/{len(check_files)} {path.name}", file=sys.stderr, flush=True)
    summary = []
    for t in TARGETS:
        mine = [r for r in rows if r["target"] == t]
        summary.append(dict(
            target=t, line=dict(a=round(lines[t][0], 3), b=round(lines[t][1], 2)), fit_photos=len(pairs[t]),
            check_photos=len(mine),
            probes_usual=round(statistics.mean(r["usual"]["probes"] for r in mine), 2),
            probes_from_jxl=round(statistics.mean(r["from JPEG XL"]["probes"] for r in mine), 2),
            same_quality=sum(r["usual"]["quality"] == r["from JPEG XL"]["quality"] for r in mine),
            bytes_ratio=round(sum(r["from JPEG XL"]["bytes"] for r in mine) / sum(r["usual"]["bytes"] for r in mine), 5),
            cpu_s_usual=round(sum(r["usual"]["cpu_s"] for r in mine), 2),
            cpu_s_from_jxl=round(sum(r["from JPEG XL"]["cpu_s"] for r in mine), 2)))
    for s in summary:
        print(f"target {s['target']:g}: AVIF q = {s['line']['a']} x JPEG XL q + {s['line']['b']} (fit on {s['fit_photos']}); "
              f"on {s['check_photos']} others: probes {s['probes_usual']} -> {s['probes_from_jxl']}, same quality "
              f"{s['same_quality']}/{s['check_photos']}, bytes x{s['bytes_ratio']}, CPU {s['cpu_s_usual']} -> {s['cpu_s_from_jxl']} s")
    save_report(a.out, summary, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
