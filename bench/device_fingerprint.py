"""Issue 11 #10 on real hardware: the same .dlc decoded on the CPU and on CUDA, and the same image
encoded on both. Reports how many pixels differ and by how much, and whether the recorded
fingerprint (``codecs.base.fingerprint``) accepts the other device's decode, which is what
verify, restore and the removal gate rely on (docs/codec.md). One JSON object on stdout.

    python bench/device_fingerprint.py [--image PATH] [--size 768x512] [--out result.json]

Without CUDA the CPU half runs alone (``cuda: null``). Runs in about a minute with the tiny model.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path


def _image(path: str | None, size: tuple[int, int]) -> bytes:
    from PIL import Image

    from archiver.testing.catalog import smooth_image

    if path:
        return Path(path).read_bytes()
    b = io.BytesIO()
    Image.fromarray(smooth_image(3, size)).save(b, "PNG")
    return b.getvalue()


def _codec(device: str):
    from archiver.codecs import CodecSettings
    from archiver.codecs.diffusion import DiffusionCodec

    return DiffusionCodec(CodecSettings(device=device))


def _compare(a, b) -> dict:
    import numpy as np

    from archiver.codecs import base

    x = np.asarray(a.convert("RGB"), dtype=np.int16)
    y = np.asarray(b.convert("RGB"), dtype=np.int16)
    d = np.abs(x - y)
    fa, fb = base.fingerprint(a), base.fingerprint(b)
    return {"pixels_differing": int((d.max(axis=2) > 0).sum()), "max_abs_diff": int(d.max()),
            "identical": bool((d == 0).all()), "fingerprint_max_diff": round(max(abs(p - q) for p, q in zip(fa, fb)), 2),
            "fingerprint_accepts": base.same_fingerprint(fb, fa), "tolerance": base.FINGERPRINT_TOLERANCE}


def main(argv=None) -> int:
    import torch

    from archiver.codecs import Source, Target, image_digest
    from archiver.imageio import load_image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image")
    ap.add_argument("--size", default="768x512")
    ap.add_argument("--bpp", type=float, default=0.15)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.split("x"))
    data = _image(a.image, (w, h))
    source = Source(load_image(data), data)
    target = Target(bpp=a.bpp)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out: dict = {"image": a.image or f"generated {w}x{h}", "devices": devices, "torch": torch.__version__}
    enc, dec = {}, {}
    for dev in devices:
        t = time.time()
        enc[dev] = _codec(dev).encode(source, target).data
        out[f"encode_{dev}_s"] = round(time.time() - t, 2)
    for src_dev in devices:
        for dev in devices:
            t = time.time()
            dec[(src_dev, dev)] = _codec(dev).decode(enc[src_dev])
            out[f"decode_{src_dev}_file_on_{dev}_s"] = round(time.time() - t, 2)
    out["encoded_bytes_identical"] = len(set(enc.values())) == 1 if len(devices) > 1 else None
    if "cuda" in devices:
        for src_dev in devices:  # the same file, decoded on each device
            out[f"{src_dev}_file_cpu_vs_cuda"] = _compare(dec[(src_dev, "cpu")], dec[(src_dev, "cuda")])
        out["digest_cpu_equals_cuda"] = image_digest(dec[("cpu", "cpu")]) == image_digest(dec[("cpu", "cuda")])
    else:
        out["cuda"] = None
        again = _codec("cpu").decode(enc["cpu"])
        out["cpu_decode_repeatable"] = image_digest(again) == image_digest(dec[("cpu", "cpu")])
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    cross = [v for k, v in out.items() if k.endswith("_cpu_vs_cuda")]
    return 1 if any(not c["fingerprint_accepts"] for c in cross) else 0


if __name__ == "__main__":
    sys.exit(main())
