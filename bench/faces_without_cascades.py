#!/usr/bin/env python3
"""Would the faces classifier lose faces without its Haar cascades? (issue 27: the cascades are
about 0.55 of the 0.9 CPU-s a photo's classification costs, BlazeFace 0.01.)

Not a test: the evidence for keeping them. Runs ``classifiers.faces.classify`` on every photo of
the given train/ folders twice, as shipped and with the cascades' detections left out (BlazeFace
alone proposes), and reports the CPU of each and every photo whose answer differs. A sheet of
the photos where only the cascades found a face (boxes in red, the first box enlarged) is
written beside the JSON, for a person to judge which are people.

    python bench/faces_without_cascades.py ../shared/data/train/bsds500 ../shared/data/train/imagenet-sample \\
        --out docs/bench/throughput-2026-12-05/faces-without-cascades.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXTS = {".jpg", ".jpeg", ".png"}


def compare(path: Path) -> tuple[dict, float, float]:
    """The classifier's answer with and without the cascades, and the CPU seconds of each."""
    from archiver.imageio import load_image
    from archiver.policy.classifiers import faces
    from archiver.policy.subject import Subject

    img = load_image(path.read_bytes())
    shipped, out, cpu = faces.detect, {}, {}
    try:
        for mode in ("with", "without"):
            faces.detect = shipped if mode == "with" else (lambda gray: [])
            t = time.process_time()
            r = faces.classify(Subject(path, img))
            cpu[mode] = time.process_time() - t
            out[mode] = dict(found=r.found, count=r.details["count"], boxes=r.regions, by=r.details["by"])
    finally:
        faces.detect = shipped
    return dict(path=str(path), **out), cpu["with"], cpu["without"]


def sheet(rows: list, out: Path) -> None:
    """The photos found only with the cascades: whole photo with the boxes, and the first box
    enlarged, three to a row."""
    from PIL import Image, ImageDraw

    tiles = []
    for r in rows:
        im = Image.open(r["path"]).convert("RGB")
        b = r["with"]["boxes"][0]
        w = b[2] - b[0]
        crop = im.crop((max(0, b[0] - w // 2), max(0, b[1] - w // 2), b[2] + w // 2, b[3] + w // 2)).resize((200, 200))
        d = ImageDraw.Draw(im)
        for box in r["with"]["boxes"]:
            d.rectangle(box, outline=(255, 0, 0), width=3)
        im.thumbnail((400, 400))
        t = Image.new("RGB", (610, 420), "white")
        t.paste(im, (0, 0))
        t.paste(crop, (405, 0))
        ImageDraw.Draw(t).text((5, 405), Path(r["path"]).name[:60], fill=(0, 0, 0))
        tiles.append(t)
    if not tiles:
        return
    cols = 3
    page = Image.new("RGB", (cols * 610, ((len(tiles) + cols - 1) // cols) * 420), "white")
    for i, t in enumerate(tiles):
        page.paste(t, ((i % cols) * 610, (i // cols) * 420))
    page.save(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="train/ folders (never kodak/)")
    ap.add_argument("--out", type=Path, required=True, help="the JSON report; the sheet goes beside it (.png)")
    a = ap.parse_args(argv)
    files = sorted(p for f in a.folders for p in f.rglob("*") if p.suffix.lower() in EXTS)
    if not files:
        print("no photos in " + ", ".join(map(str, a.folders)), file=sys.stderr)
        return 2
    rows, cpu_with, cpu_without = [], 0.0, 0.0
    for i, p in enumerate(files):
        r, cw, cwo = compare(p)
        cpu_with, cpu_without = cpu_with + cw, cpu_without + cwo
        if (r["with"]["found"], r["with"]["count"]) != (r["without"]["found"], r["without"]["count"]):
            rows.append(r)
        if (i + 1) % 100 == 0 or i + 1 == len(files):
            print(f"{i + 1}/{len(files)}: {len(rows)} differ so far", file=sys.stderr, flush=True)
    lost = [r for r in rows if r["with"]["found"] and not r["without"]["found"]]
    summary = dict(photos=len(files), cpu_s_per_photo_with=round(cpu_with / len(files), 3),
                   cpu_s_per_photo_without=round(cpu_without / len(files), 3),
                   fewer_faces=len(rows) - len(lost), no_face_without_cascades=len(lost),
                   lost=[Path(r["path"]).name for r in lost])
    print(json.dumps(summary, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(dict(command=" ".join(sys.argv), summary=summary, differ=rows), indent=1))
    sheet(lost, a.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
