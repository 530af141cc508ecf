#!/usr/bin/env python3
"""Why diffusion encodes miss the policy's protected-region floor: the backbone's own ceiling.

Not a test: a measurement for docs/benchmarks.md. For every image the default policy sends to
the diffusion codec with protected regions (faces/text, weak candidates included), reports:

- the regions (boxes, which detector, share of the image);
- the autoencoder's ceiling: PSNR in the worst region of ``decode(encode(x))`` with no
  quantization at all (no step size, no byte budget reaches above it);
- the shipped encode at the policy's rate (``--bpp``) with the region step divided by each
  ``--factors`` value (1 = no ROI; 2 = the codec's default), decoded with the header's DDIM steps
  and with none (``t0``): region PSNR, whole PSNR, MS-SSIM, bytes, t;
- with ``--qualities``: fixed quality Q (no rate control) to show how region PSNR and bytes grow.

    python bench/region_ceiling.py IMAGE_OR_DIR [...] [--bpp 0.15] [--factors 1,2,8]
        [--qualities 50,70,100] [--weights DIR] [--json OUT.json]

Runs on the CPU, one thread (run it niced on a shared machine). Kodak is for evaluation only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _images(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(x for x in p.iterdir() if x.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"))
                   if p.is_dir() else [p])
    return out


def _regions(decision) -> list[dict]:
    """The protected boxes with the detector that produced them and whether it confirmed them."""
    out = []
    for name in ("faces", "text"):
        r = decision.evidence.get(name)
        if r is None:
            continue
        out += [{"box": list(map(int, b)), "by": name, "confirmed": True} for b in r.regions]
        out += [{"box": list(map(int, b)), "by": name, "confirmed": False} for b in r.details.get("weak_regions", ())]
    return out


def measure(path: Path, policy, backbone, bpp: float, factors: list[float], qualities: list[float]) -> dict | None:
    from archiver.codecs.diffusion.pipeline import decode_bytes, encode_image
    from archiver.codecs.diffusion.tensors import deterministic, pad_to, to_image, to_tensor
    from archiver.codecs.base import Source
    from archiver.codecs.base import measure as guard
    from archiver.imageio import load_image

    img = load_image(path)
    d = policy.decide(path, img)
    boxes = [tuple(map(int, b)) for b in d.protected_regions]
    if d.action != "diffusion" or not boxes:
        return None
    # measured by the quality guard itself (the floor's PSNR, MS-SSIM and worst-region PSNR)
    source = Source(img, b"", boxes)

    with deterministic():
        x = pad_to(to_tensor(img.rgb), backbone.stride).to(backbone.device)
        ae = guard(source, to_image(backbone.decode(backbone.encode(x)), img.width, img.height))
    row = {"image": path.name, "size": [img.width, img.height], "regions": _regions(d),
           "region_share": sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) / (img.width * img.height),
           "ceiling": {"psnr": ae.psnr, "region_psnr": ae.region_psnr}, "at_bpp": [], "at_quality": []}

    def run(**kw) -> dict:
        t0 = time.process_time()
        e = encode_image(img, backbone, **kw)
        v = guard(source, decode_bytes(e.data, backbone).image)
        v0 = guard(source, decode_bytes(e.data, backbone, steps=0).image)
        return {"bytes": e.size_bytes, "bpp": e.bpp, "quality": e.quality, "t": e.t,
                "psnr": v.psnr, "ms_ssim": v.ms_ssim, "region_psnr": v.region_psnr,
                "region_psnr_t0": v0.region_psnr, "cpu_s": time.process_time() - t0}

    for f in factors:
        row["at_bpp"].append({"roi_factor": f, **run(bpp=bpp, roi=boxes if f != 1.0 else None, roi_factor=f)})
    for q in qualities:
        row["at_quality"].append({"q": q, "roi_factor": 2.0, **run(quality=q, roi=boxes)})
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--bpp", type=float, default=0.15, help="the policy's rate (default 0.15)")
    ap.add_argument("--factors", default="1,2,8", help="ROI step divisors to try at --bpp (1 = no ROI)")
    ap.add_argument("--qualities", default="", help="fixed qualities to try (ROI factor 2), e.g. 50,70,100")
    ap.add_argument("--weights", default=None, help="a tiny weights folder (default: the shipped one)")
    ap.add_argument("--json", dest="out", default=None, help="write the rows here")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from archiver.codecs.diffusion.backbones.tiny import load_tiny
    from archiver.policy.engine import load_policy

    backbone = load_tiny(device="cpu", weights_dir=a.weights)
    policy = load_policy(None)
    factors = [float(x) for x in a.factors.split(",") if x]
    qualities = [float(x) for x in a.qualities.split(",") if x]
    rows = []
    for p in _images(a.paths):
        row = measure(p, policy, backbone, a.bpp, factors, qualities)
        if row is None:
            print(f"{p.name}: not a diffusion candidate with protected regions, skipped", flush=True)
            continue
        rows.append(row)
        c = row["ceiling"]
        runs = "  ".join(f"x{r['roi_factor']:g}: {r['region_psnr']:.2f} (t0 {r['region_psnr_t0']:.2f}) "
                         f"psnr {r['psnr']:.2f} {r['bytes']} B" for r in row["at_bpp"])
        runs += "".join(f"  Q{r['q']:g}: {r['region_psnr']:.2f} {r['bpp']:.2f} bpp" for r in row["at_quality"])
        print(f"{p.name}: {len(row['regions'])} regions ({100 * row['region_share']:.1f}%), ceiling region "
              f"{c['region_psnr']:.2f} dB (whole {c['psnr']:.2f}) | {runs}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"backbone": backbone.id, "weights_sha256": backbone.weights_digest,
                                           "bpp": a.bpp, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
