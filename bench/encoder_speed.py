#!/usr/bin/env python3
"""Which encoder speed setting archiver's AVIF and JPEG XL searches use (issue 27): the smallest
file that reaches the target with each setting, its bytes and the search's CPU seconds.

Not a test: the evidence for ``AvifCodec.speed`` and ``JxlCodec.effort``. A faster setting is
taken only if it reaches the same SSIMULACRA2 target in (nearly) as few bytes, because a codec
earns a file by being smaller at the same score, and bytes are what an archive keeps for years.
Decide on train/ images only (BSDS500 val, ImageNet sample), never on kodak/.

    python bench/encoder_speed.py --count 30 --out docs/bench/throughput-2026-12-05/encoder-speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "train"
FOLDERS = ("bsds500/val", "imagenet-sample")


def no_data() -> bool:
    """True, with one line on stderr, when ../shared/data is not there (the bench exits 2)."""
    if DATA.is_dir():
        return False
    print(f"{DATA}: not found (needs ../shared/data)", file=sys.stderr)
    return True


def folder_photos(folder: str) -> list[Path]:
    """The photos of one validation folder (``FOLDERS``), sorted."""
    return sorted(p for p in (DATA / folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def images(count: int) -> list[Path]:
    """``count`` images from each validation folder, spread over it (sorted, every k-th)."""
    out = []
    for folder in FOLDERS:
        files = folder_photos(folder)
        step = max(1, len(files) // count)
        out += files[::step][:count]
    return out


def save_report(out: Path | None, summary: list, rows: list) -> None:
    """The command line, the summary and every row as JSON at ``out`` (nothing when None)."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(command=" ".join(sys.argv), summary=summary, rows=rows), indent=1))


def search(codec, src, score: float) -> tuple[int, float, int, float, int]:
    """(bytes, achieved score, probes, CPU seconds, quality setting) of the codec's own search for ``score``."""
    from archiver.codecs import Target
    from archiver.codecs.base import CodecRefused

    t = time.process_time()
    try:
        enc = codec.encode(src, Target(floor={"min_ssimulacra2": score}))
    except CodecRefused:
        return -1, float("nan"), 0, time.process_time() - t, -1
    return (enc.size, enc.quality.get("score"), len(enc.params.get("probes") or []), time.process_time() - t,
            enc.params.get("quality"))


def main(argv=None) -> int:
    from archiver.codecs import Source, get_codec
    from archiver.imageio import load_image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=30, help="images from each validation folder")
    ap.add_argument("--targets", default="70,90")
    ap.add_argument("--avif-speeds", default="6,7,8")
    ap.add_argument("--jxl-efforts", default="7,5")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    if no_data():
        return 2
    settings = [("avif", "speed", int(s)) for s in a.avif_speeds.split(",")] + \
               [("jxl", "effort", int(e)) for e in a.jxl_efforts.split(",")]
    targets = [float(t) for t in a.targets.split(",")]
    rows = []
    files = images(a.count)
    for i, path in enumerate(files):
        data = path.read_bytes()
        src = Source(load_image(data), data)
        for name, knob, value in settings:
            codec = get_codec(name)
            setattr(codec, knob, value)
            for score in targets:
                size, got, probes, cpu, quality = search(codec, src, score)
                rows.append(dict(image=str(path.relative_to(DATA)), codec=name, knob=knob, value=value,
                                 target=score, bytes=size, score=got, probes=probes, cpu_s=round(cpu, 4), quality=quality))
        print(f"{i + 1}/{len(files)} {path.name}", file=sys.stderr, flush=True)
    summary = []
    for name, knob, value in settings:
        for score in targets:
            mine = [r for r in rows if (r["codec"], r["value"], r["target"]) == (name, value, score)]
            ref = {r["image"]: r for r in rows if r["codec"] == name and r["target"] == score
                   and r["value"] == settings[[s[0] for s in settings].index(name)][2]}
            both = [r for r in mine if r["bytes"] > 0 and ref[r["image"]]["bytes"] > 0]
            summary.append(dict(
                codec=name, knob=knob, value=value, target=score, images=len(mine),
                reached=sum(r["bytes"] > 0 for r in mine),
                bytes_total=sum(r["bytes"] for r in both),
                bytes_vs_first=round(sum(r["bytes"] for r in both) / max(1, sum(ref[r["image"]]["bytes"] for r in both)), 4),
                bytes_ratio_median=round(statistics.median(r["bytes"] / ref[r["image"]]["bytes"] for r in both), 4) if both else None,
                cpu_s_total=round(sum(r["cpu_s"] for r in mine), 2),
                probes_mean=round(statistics.mean(r["probes"] for r in mine), 2),
                quality_median=statistics.median(r["quality"] for r in mine),
            ))
    for s in summary:
        print(f"{s['codec']:4} {s['knob']} {s['value']:>2} target {s['target']:g}: reached {s['reached']}/{s['images']}, "
              f"bytes x{s['bytes_vs_first']:.4f} (median x{s['bytes_ratio_median']}) vs the first setting, "
              f"CPU {s['cpu_s_total']:.1f} s, {s['probes_mean']:.1f} probes, median quality {s['quality_median']}")
    save_report(a.out, summary, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
