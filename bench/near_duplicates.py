"""Choose the near-duplicate thresholds on train/ (issue 28) and write the raw counts.

For every train/ image: its pHash and dHash (``archiver.likeness.hashes``, as discover computes
them, through ``imageio.load_image``), and those of copies a person would call the same picture:
resized to half, re-saved as JPEG q70, cropped by 3% on each side, and (reported, not required)
cropped by 6% and the three first combined. Positive pairs: original vs copy. Negative pairs:
every pair of distinct train/ images. For each (pHash max, dHash max) the counts of matched
positives and of false matches are written; the chosen thresholds are the ones in
``archiver.likeness`` (recall >= 0.95 on the required copies, false matches <= 1 in 10,000).

    nice -n 5 python bench/near_duplicates.py ../shared/data/train --out docs/bench/near-duplicates-2026-12-05.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from archiver import likeness
from archiver.imageio import load_image

REQUIRED = ("resize50", "jpeg70", "crop3")
EXTRA = ("crop6", "combined")


def _jpeg(img: Image.Image, q: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _crop(img: Image.Image, frac: float) -> Image.Image:
    w, h = img.size
    dx, dy = round(w * frac), round(h * frac)
    return img.crop((dx, dy, w - dx, h - dy))


def variants(rgb: Image.Image) -> dict[str, bytes]:
    w, h = rgb.size
    half = rgb.resize((max(1, w // 2), max(1, h // 2)), Image.LANCZOS)
    return {"resize50": _png(half), "jpeg70": _jpeg(rgb, 70), "crop3": _png(_crop(rgb, 0.03)),
            "crop6": _png(_crop(rgb, 0.06)), "combined": _jpeg(_crop(half, 0.03), 70)}


def hashes_of(data: bytes) -> tuple[int, int]:
    ph, dh = likeness.hashes(load_image(data).rgb)
    return likeness.as_int(ph), likeness.as_int(dh)


def popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(x.shape + (8,)), axis=-1).sum(-1).astype(np.int64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args(argv)
    files = sorted(p for p in a.train.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"))
    if a.limit:
        files = files[:a.limit]
    t0 = time.time()
    orig_p, orig_d = [], []
    pos = {k: ([], []) for k in REQUIRED + EXTRA}
    for i, f in enumerate(files):
        img = load_image(f.read_bytes())
        ph, dh = likeness.hashes(img.rgb)
        ph, dh = likeness.as_int(ph), likeness.as_int(dh)
        orig_p.append(ph)
        orig_d.append(dh)
        for k, data in variants(img.rgb).items():
            vp, vd = hashes_of(data)
            pos[k][0].append((ph ^ vp).bit_count())
            pos[k][1].append((dh ^ vd).bit_count())
        if i % 100 == 0:
            print(f"{i}/{len(files)} images, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    P = np.array(orig_p, dtype=np.uint64)
    D = np.array(orig_d, dtype=np.uint64)
    n = len(files)
    iu = np.triu_indices(n, 1)
    neg_p = popcount(P[iu[0]] ^ P[iu[1]])
    neg_d = popcount(D[iu[0]] ^ D[iu[1]])
    grid = []
    for pm in range(0, 25):
        for dm in range(0, 25):
            neg = int(((neg_p <= pm) & (neg_d <= dm)).sum())
            row = {"phash_max": pm, "dhash_max": dm, "false_matches": neg, "negative_pairs": int(neg_p.size)}
            for k, (pp, dd) in pos.items():
                row[k] = int(((np.array(pp) <= pm) & (np.array(dd) <= dm)).sum())
            grid.append(row)
    chosen = next(r for r in grid if r["phash_max"] == likeness.PHASH_MAX and r["dhash_max"] == likeness.DHASH_MAX)
    out = {"images": n, "sources": sorted({str(f.relative_to(a.train)).split("/")[0] for f in files}),
           "positive_pairs_per_copy": n, "negative_pairs": int(neg_p.size),
           "chosen": chosen, "chosen_recall": {k: chosen[k] / n for k in REQUIRED + EXTRA},
           "chosen_false_match_rate": chosen["false_matches"] / int(neg_p.size),
           "positive_histograms": {k: {"phash": np.bincount(pp, minlength=65).tolist(),
                                       "dhash": np.bincount(dd, minlength=65).tolist()} for k, (pp, dd) in pos.items()},
           "negative_histograms": {"phash": np.bincount(neg_p, minlength=65).tolist(),
                                   "dhash": np.bincount(neg_d, minlength=65).tolist()},
           "grid": grid, "seconds": round(time.time() - t0, 1)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("images", "negative_pairs", "chosen", "chosen_recall", "chosen_false_match_rate")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
