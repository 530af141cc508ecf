"""What each named target level looks like (docs/policies.md): one photo from train/ (signs with
lettering over foliage), encoded by archiver's own AVIF search at the smallest file that reaches
each level, and the same window of each shown side by side, enlarged, with its score and size.

    python bench/target_levels.py [IMAGE] --out docs/bench/target-levels.png
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT = ROOT.parent / "shared" / "data" / "train" / "imagenet-sample" / "n06794110_street_sign.JPEG"


def main(argv=None) -> int:
    from archiver.codecs import Source, Target, get_codec
    from archiver.imageio import load_image
    from archiver.perceptual import TARGET_LEVELS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "target-levels.png")
    ap.add_argument("--box", default="60,40,220,120", help="the window shown: left,top,right,bottom")
    ap.add_argument("--zoom", type=int, default=3)
    a = ap.parse_args(argv)
    if not a.image.is_file():
        print(f"{a.image}: not found (the default needs ../shared/data)", file=sys.stderr)
        return 2
    data = a.image.read_bytes()
    src = Source(load_image(data), data)
    box = tuple(int(v) for v in a.box.split(","))
    tiles = [("original", src.image.rgb, f"{len(data) // 1024} KiB JPEG")]
    for name, score in sorted(TARGET_LEVELS.items(), key=lambda kv: -kv[1]):
        enc = get_codec("avif").encode(src, Target(floor={"min_ssimulacra2": score}))
        img = Image.open(io.BytesIO(enc.data)).convert("RGB")
        tiles.append((f"{name} ({score:g})", img, f"AVIF q{enc.params['quality']}: {enc.size // 1024} KiB, "
                      f"score {enc.quality['score']:.1f}"))
    w, h = (box[2] - box[0]) * a.zoom, (box[3] - box[1]) * a.zoom
    cols = 3
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * (w + 8), rows * (h + 44)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, img, note) in enumerate(tiles):
        x, y = (i % cols) * (w + 8), (i // cols) * (h + 44)
        sheet.paste(img.crop(box).resize((w, h), Image.Resampling.NEAREST), (x, y + 40))
        draw.text((x + 2, y + 4), title, fill="black")
        draw.text((x + 2, y + 20), note, fill="black")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
