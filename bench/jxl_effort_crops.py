#!/usr/bin/env python3
"""JPEG XL effort 7 against effort 4 at the same SSIMULACRA2 target, as a person sees it: four
train/ validation photos, each codec's own search for the target, the centre of each enlarged 3x
side by side, with bytes, SSIMULACRA2 and butteraugli (3-norm; needs libjxl's butteraugli_main).
Not a test: the picture behind ``JxlCodec.effort`` (bench/encoder_speed.py has the numbers).

    python bench/jxl_effort_crops.py --out docs/bench/throughput-2026-12-05/jxl-effort-crops.png
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main(argv=None) -> int:
    from archiver.codecs import Source, Target, get_codec
    from archiver.imageio import load_image
    from archiver.perceptual import butteraugli
    from encoder_speed import images, no_data

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=float, default=70.0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if no_data():
        return 2
    files = images(30)
    codec = get_codec("jxl")
    W, H, Z = 160, 110, 3
    rows = []
    for path in (files[i] for i in (3, 17, 40, 55)):
        data = path.read_bytes()
        src = Source(load_image(data), data)
        tiles = [(f"original {path.name}", src.image.rgb)]
        for effort in (7, 4):
            codec.effort = effort
            enc = codec.encode(src, Target(floor={"min_ssimulacra2": a.target}))
            rec = Image.open(io.BytesIO(enc.data)).convert("RGB")
            ba = butteraugli(src.image.rgb, rec, norm="3")
            line = (f"JXL effort {effort}: {enc.size} B, SSIMULACRA2 {enc.quality['score']:.1f}"
                    + (f", butteraugli {ba:.2f}" if ba is not None else ""))
            print(path.name, line)
            tiles.append((line, rec))
        rows.append(tiles)
    sheet = Image.new("RGB", (3 * (W * Z + 6), len(rows) * (H * Z + 24)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, tiles in enumerate(rows):
        w, h = tiles[0][1].size
        box = (w // 2 - W // 2, h // 2 - H // 2, w // 2 + W // 2, h // 2 + H // 2)
        for j, (title, img) in enumerate(tiles):
            x, y = j * (W * Z + 6), i * (H * Z + 24)
            sheet.paste(img.crop(box).resize((W * Z, H * Z), Image.Resampling.NEAREST), (x, y + 20))
            draw.text((x + 2, y + 4), title, fill="black")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out, optimize=True)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
