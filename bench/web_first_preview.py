#!/usr/bin/env python3
"""Why the dashboard's first decoded picture is slow, and how slow it is now (issue 26).

Not a test: a measurement to quote in docs/web.md. It archives real photos from
``../shared/data/train`` (centre crops at Kodak's 768x512, the size the issue saw 7.8 s on) with
the real diffusion codec on the CPU, then

1. in a fresh process, times each step of a first decode: importing torch, importing the
   pipeline (diffusers), loading the backbone's weights and its entropy model, the first decode,
   a second decode of the same file, the PNG for the browser;
2. starts ``archiver serve`` as a real process three times and times over HTTP the first decoded
   picture, the first of another file, and one from the cache: with ``web.warm_decoder`` off
   (what main did: the codec loads on the first decoded picture), on with the picture asked for
   the moment the server answers (it waits for the load under way), and on with the picture
   asked for once ``/api/status`` says the decoder is ready (a person who opens a file page a
   few seconds after the start).

    nice -n 5 python bench/web_first_preview.py [--data DIR] [--json docs/bench/web-first-preview-DATE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "train" / "imagenet-sample"

POLICY = """
version: 1
name: web-first-preview
defaults:
  bpp: 0.3
  floor: {min_psnr: 0.0, min_ms_ssim: 0.0, min_region_psnr: 0.0}
  original: replace
rules:
  - name: photos
    when: {path: ["**"]}
    action: diffusion
    allow_generative: true
"""

PHASES = r"""
import io, json, sys, time
t = time.perf_counter(); out = {}
def lap(k):
    global t
    now = time.perf_counter(); out[k] = round(now - t, 3); t = now
import torch; lap("import_torch")
from archiver.codecs import CodecSettings, get_codec
from archiver.codecs.diffusion import pipeline; lap("import_pipeline_diffusers")
codec = get_codec("diffusion", CodecSettings(device="cpu"))
bb = codec.backbone; lap("load_backbone_weights")
bb.entropy_model(); lap("load_entropy_model")
blob = open(sys.argv[1], "rb").read()
img = codec.decode(blob); lap("decode_first")
img = codec.decode(blob); lap("decode_again")
buf = io.BytesIO(); img.save(buf, "PNG", compress_level=1); lap("png_for_the_browser")
out["threads"] = torch.get_num_threads()
print(json.dumps(out))
"""


def pick_images(folder: Path, n: int) -> list[Path]:
    """The first ``n`` train photos at least 768x512, in name order (a fixed, reproducible set)."""
    from PIL import Image

    out = []
    for p in sorted(folder.iterdir()):
        with Image.open(p) as im:
            if im.width >= 768 and im.height >= 512:
                out.append(p)
        if len(out) == n:
            return out
    raise SystemExit(f"fewer than {n} photos of at least 768x512 in {folder}")


def archive(tmp: Path, images: list[Path]) -> tuple[object, list[int]]:
    from PIL import Image

    from archiver.codecs import CodecSettings, get_codec
    from archiver.policy.engine import parse_policy_text
    from archiver.testing.catalog import make_context
    from archiver.work import archive_file

    ctx = make_context(tmp, codec=get_codec("diffusion", CodecSettings(device="cpu")))
    ctx.policy = parse_policy_text(POLICY, "bench")
    ctx.root = str(tmp / "photos")
    ids = []
    for i, src in enumerate(images):
        with Image.open(src) as im:
            im = im.convert("RGB")
            left, top = (im.width - 768) // 2, (im.height - 512) // 2
            dst = tmp / "photos" / f"photo{i}.jpg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            im.crop((left, top, left + 768, top + 512)).save(dst, quality=92)
        out = archive_file(dst, ctx)
        if out.state != "committed" or out.action != "diffusion":
            raise SystemExit(f"{dst}: not archived with diffusion ({out.state}, {out.action}, {out.error})")
        ids.append(out.file_id)
    return ctx, ids


def phases(compressed: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", PHASES, compressed], capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _get(url: str) -> tuple[float, int, str]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        body = r.read()
        return time.perf_counter() - t, len(body), r.headers.get("X-Archiver-Source", "")


def over_http(tmp: Path, ctx, ids: list[int], warm: bool, wait_for_warm: bool = False) -> dict:
    """A fresh ``archiver serve``; the first decoded picture asked for as soon as it serves, or
    (``wait_for_warm``) once ``/api/status`` says the decoder is ready; then another file's."""
    cache = tmp / f"web-cache-{int(warm)}{int(wait_for_warm)}"
    shutil.rmtree(cache, ignore_errors=True)
    cfg = tmp / f"archiver-{int(warm)}.yaml"
    cfg.write_text(json.dumps({"catalog_url": ctx.catalog.url, "vault_dir": str(tmp / "vault"), "device": "cpu",
                               "web": {"port": 0, "cache_dir": str(cache), "warm_decoder": warm}}))
    env = dict(os.environ, ARCHIVER_HOME=str(tmp / "state"), PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "archiver", "serve", "--config", str(cfg), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        url = json.loads(proc.stdout.readline())["url"].rstrip("/")
        out = {"warm_decoder": warm, "asked_once_warm": wait_for_warm,
               "serving_after_s": round(time.perf_counter() - t0, 3)}
        if wait_for_warm:
            while json.loads(urllib.request.urlopen(f"{url}/api/status").read()).get("decoder") == "warming":
                time.sleep(0.1)
            out["decoder_ready_after_start_s"] = round(time.perf_counter() - t0, 3)
        s, n, src = _get(f"{url}/api/files/{ids[0]}/decoded")
        out["first_decoded_picture_s"] = round(s, 3)
        s, n, src = _get(f"{url}/api/files/{ids[1]}/decoded")
        out["first_decoded_of_another_file_s"] = round(s, 3)
        s, n, src = _get(f"{url}/api/files/{ids[0]}/decoded")
        out["from_the_cache_s"] = round(s, 4)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--data", default=str(DATA), help="a folder of photos (default: ../shared/data/train/imagenet-sample)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"needs {data} (the project's shared data; pass --data)")
    tmp = Path(tempfile.mkdtemp(prefix="web-first-preview-"))
    try:
        images = pick_images(data, max(2, args.images))
        t = time.perf_counter()
        ctx, ids = archive(tmp, images)
        from archiver.catalog.models import FileVersion

        with ctx.catalog.read_session() as s:
            dlc = s.get(FileVersion, ids[0]).compressed_path
        res = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(), "images": [p.name for p in images],
               "size": "768x512", "archive_s": round(time.perf_counter() - t, 1),
               "phases_fresh_process": phases(dlc),
               "http": [over_http(tmp, ctx, ids, warm=False), over_http(tmp, ctx, ids, warm=True),
                        over_http(tmp, ctx, ids, warm=True, wait_for_warm=True)],
               "command": "python bench/web_first_preview.py " + " ".join(sys.argv[1:])}
        text = json.dumps(res, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
