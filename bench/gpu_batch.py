#!/usr/bin/env python3
"""The diffusion codec's batched path end to end on a device (issue 27, "A GPU when there is one").

Not a test: the measurement for a GPU machine. For N images: the encoder's analysis batched
across images (``QualityProbe.many``), entropy coding at one quality on CPU threads, then the
denoiser and decoder batched across files (``decode_many``); images/s per stage and end to end,
which stage bounds it, and the GPU's utilisation sampled while it runs (``service.gpu_usage``;
none on a CPU). On the CPU it checks the batched bytes/pixels against one-by-one coding for the first
images (``--check``).

    python bench/gpu_batch.py ../shared/data/kodak --device cuda --count 500 --batch 16 --json
    python bench/gpu_batch.py ../shared/data/train/bsds500/train --device cpu --count 4 --batch 2 --check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", type=Path)
    ap.add_argument("--count", type=int, default=500, help="images (the folder is cycled to reach it)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--quality", type=float, default=50.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for entropy coding")
    ap.add_argument("--check", action="store_true", help="compare with one-by-one coding on the first images")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    from archiver.codecs.diffusion import pipeline
    from archiver.codecs.diffusion.backbones import get_backbone
    from archiver.imageio import load_image
    from archiver.service.gpu_usage import GpuSampler

    files = sorted(p for p in a.images.iterdir() if p.suffix.lower() in EXTS) if a.images.is_dir() else []
    if not files:
        print(f"no images in {a.images}", file=sys.stderr)
        return 2
    files = [files[i % len(files)] for i in range(a.count)]
    t0 = time.perf_counter()
    backbone = get_backbone("tiny", device=a.device)
    t_model = time.perf_counter() - t0
    stages: dict[str, float] = {}
    with ThreadPoolExecutor(a.threads) as pool, GpuSampler(interval=0.2) as gpu:
        t = time.perf_counter()
        imgs = list(pool.map(lambda p: load_image(p.read_bytes()), files))
        stages["load (CPU threads)"] = time.perf_counter() - t
        t = time.perf_counter()
        probes = pipeline.QualityProbe.many(imgs, backbone, batch=a.batch)
        stages["analysis (device, batched)"] = time.perf_counter() - t
        t = time.perf_counter()
        datas = list(pool.map(lambda pr: pr.file_at(a.quality)[0], probes))
        stages["entropy coding (CPU threads)"] = time.perf_counter() - t
        t = time.perf_counter()
        decoded = pipeline.decode_many(datas, backbone, batch=a.batch)
        stages["decode (device, batched)"] = time.perf_counter() - t
    total = sum(stages.values())
    n = len(files)
    report = {"device": str(backbone.device), "images": n, "batch": a.batch, "threads": a.threads,
              "model_load_s": round(t_model, 2), "seconds": {k: round(v, 3) for k, v in stages.items()},
              "images_per_s": {k: round(n / v, 2) if v > 0 else None for k, v in stages.items()},
              "end_to_end_images_per_s": round(n / total, 2), "bottleneck": max(stages, key=stages.get),
              "gpu_utilisation": gpu.summary(), "bytes_mean": int(sum(map(len, datas)) / n)}
    if a.check:
        k = min(n, 2 * a.batch)
        same_bytes = all(pipeline.QualityProbe(img, backbone).file_at(a.quality)[0] == d
                         for img, d in zip(imgs[:k], datas[:k]))
        import numpy as np

        worst = max(int(np.abs(np.asarray(pipeline.decode_bytes(d, backbone).image, dtype=int)
                               - np.asarray(x.image, dtype=int)).max()) for d, x in zip(datas[:k], decoded[:k]))
        report["check"] = {"images": k, "same_bytes": same_bytes, "max_pixel_difference": worst}
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        for k, v in stages.items():
            print(f"{k:32} {v:8.2f} s  {n / v if v else 0:8.2f} images/s")
        print(f"end to end: {report['end_to_end_images_per_s']} images/s on {report['device']}, bottleneck: "
              f"{report['bottleneck']}, GPU utilisation: {report['gpu_utilisation']}")
        if "check" in report:
            print(f"check: {report['check']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
