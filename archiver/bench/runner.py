"""The benchmark run: every image x target rate x codec -> real bpp, quality, realism, speed, memory.

Results are plain dicts (one per image/codec/rate) so the JSON, the Markdown table, the plots
and the tests all read the same numbers.
"""

from __future__ import annotations

import math
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .. import metrics
from ..errors import InputError, UsageError
from ..imageio import load_image
from ..text import to_json
from .codecs import ALL_CODECS, CONVENTIONAL, NEURAL
from .measure import MEMORY_METHOD, Fid, Lpips, measure
from . import ours as ours_mod
from .report import summarize, verdicts
from .report import write_crops
from .report import write_outputs

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".ppm", ".pgm"}


@dataclass
class BenchConfig:
    images: Path
    bpps: tuple[float, ...] = (0.1, 0.2, 0.3)
    codecs: tuple[str, ...] = ALL_CODECS
    steps: int | None = None
    limit: int | None = None
    out: Path | None = None
    #: number of images (the first ones) that get side-by-side crops
    crop_images: int = 3
    crop_size: int = 192
    backbone: str = "tiny"
    #: weights directory (tiny) or model directory (diffusers); None = the shipped tiny weights
    model_path: str | None = None
    adapter: str | None = None  # adapter folder for a diffusers backbone
    device: str = "cpu"
    show_progress: bool = True
    #: ``progress(iterable, total=, desc=)``: the caller's view of the images (app/ draws it)
    progress: Callable | None = None
    #: metric names to skip (e.g. {"lpips", "fid"} in tests)
    skip: set = field(default_factory=set)


def list_images(root: Path, limit: int | None = None) -> list[Path]:
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such directory")
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise InputError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_EXTS))})")
    return files[:limit] if limit else files


def _finite(x):
    """JSON has no inf/NaN: identical images (PSNR inf) are written as null."""
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


@contextmanager
def _failures(failures: list, image: str, codec: str, target):
    """One codec failing on one image is recorded and the run goes on (a long run must not die)."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        failures.append({"image": image, "codec": codec, "target_bpp": target, "error": f"{type(e).__name__}: {e}"})


@contextmanager
def _one_thread():
    """Metrics run single-threaded: on a shared 2-core machine torch's small convolutions are
    several times slower with 2 threads than with 1. Codec timings keep torch's setting."""
    import torch  # heavy: torch, optional and slow to import

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def texture_box(rgb: Image.Image, size: int) -> tuple[int, int, int, int]:
    """The size x size window with the most luma gradient energy: where codecs differ most."""

    g = np.asarray(rgb.convert("L"), dtype=np.float32)
    h, w = g.shape
    size = min(size, h, w)
    e = np.zeros_like(g)
    e[:, 1:] += np.abs(np.diff(g, axis=1))
    e[1:, :] += np.abs(np.diff(g, axis=0))
    ii = np.pad(e.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, size // 6)
    best, box = -1.0, (0, 0, size, size)
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            s = ii[y + size, x + size] - ii[y, x + size] - ii[y + size, x] + ii[y, x]
            if s > best:
                best, box = s, (x, y, x + size, y + size)
    return box


def run_bench(cfg: BenchConfig) -> dict:
    """Run the benchmark; writes files under ``cfg.out`` when given; returns everything."""
    for c in cfg.codecs:
        if c not in ALL_CODECS:
            raise UsageError(f"unknown codec {c!r} (known: {', '.join(ALL_CODECS)})")
    if not cfg.bpps or any(not (0 < b < 24) for b in cfg.bpps):
        raise UsageError("target rates must be positive bits per pixel, e.g. --bpp 0.1,0.2,0.3")
    files = list_images(cfg.images, cfg.limit)

    unavailable: dict[str, str] = {}
    conventional = []
    for name in cfg.codecs:
        if name in CONVENTIONAL:
            ok, why = CONVENTIONAL[name].available()
            if ok:
                conventional.append(CONVENTIONAL[name])
            else:
                unavailable[name] = why
    ours = None
    neural = [c for c in cfg.codecs if c in NEURAL]
    if neural:
        try:
            ours = ours_mod.Ours(cfg.backbone, cfg.device, cfg.model_path, adapter=cfg.adapter)
        except ours_mod.OursUnavailable as e:
            for c in neural:
                unavailable[c] = str(e)
            neural = []

    lp, lp_status = (None, "not computed (skipped by request)") if "lpips" in cfg.skip else Lpips.load()
    fid, fid_status = (None, "not computed (skipped by request)") if "fid" in cfg.skip else Fid.load()

    records: list[dict] = []
    skipped: list[dict] = []
    failures: list[dict] = []
    crops: dict[tuple[str, float], dict] = {}  # (image, rate) -> {"box", "original", codec: (crop, record)}
    crop_boxes: dict[str, tuple] = {}
    fid_feats: dict[tuple[str, float | None], list] = {}
    ref_feats: list = []

    def add(image: str, codec: str, target, rgb, rec: Image.Image, nbytes: int | None, enc, dec, extra=None):
        px = rgb.width * rgb.height
        mp = px / 1e6
        r = {
            "image": image,
            "codec": codec,
            "target_bpp": target,
            "bpp": None if nbytes is None else nbytes * 8 / px,
            "bytes": nbytes,
            "width": rgb.width,
            "height": rgb.height,
        }
        with _one_thread():
            r.update({
                "psnr": _finite(metrics.psnr(rgb, rec)),
                "ms_ssim": metrics.ms_ssim(rgb, rec),
                "spectral_distance": metrics.spectral_distance(rgb, rec),
                "lpips": lp(rgb, rec) if lp else None,
            })
        r.update({
            "encode_s": enc.seconds if enc else None,
            "decode_s": dec.seconds if dec else None,
            "encode_s_per_mp": enc.seconds / mp if enc else None,
            "decode_s_per_mp": dec.seconds / mp if dec else None,
            "encode_peak_mib": enc.peak_mib if enc else None,
            "decode_peak_mib": dec.peak_mib if dec else None,
        })
        r.update(extra or {})
        records.append(r)
        if fid:
            fid_feats.setdefault((codec, target), []).append(rec)
        if image in crop_boxes:
            box = crop_boxes[image]
            for b in ([target] if target is not None else cfg.bpps):
                crops[(image, b)][codec] = (rec.crop(box), r)

    import torch  # heavy: torch, optional and slow to import

    result = {
        "config": {
            "images": str(cfg.images),
            "n_images": len(files),
            "bpps": list(cfg.bpps),
            "codecs": list(cfg.codecs),
            "steps": cfg.steps,
            "limit": cfg.limit,
            "backbone": cfg.backbone,
            "model_path": cfg.model_path,
            "adapter": cfg.adapter,
            "device": cfg.device,
            "out": str(cfg.out) if cfg.out else None,
        },
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "pillow": Image.__version__,
            "conventional_options": {c.name: {"format": c.pil_format, **c.options} for c in conventional},
            "backbone": ours.describe() if ours else None,
        },
        "metrics": {
            "psnr": "dB on 8-bit RGB (null = identical)",
            "ms_ssim": "archiver.metrics.ms_ssim on RGB, data range 255 (pytorch_msssim's weights and window, its value to 2e-5)",
            "spectral_distance": "archiver.metrics.spectral_distance: RMS log10 power difference of radially averaged luma spectra (lower = closer to the original's spectrum)",
            "lpips": lp_status,
            "fid": fid_status,
            "memory": MEMORY_METHOD,
            "bpp": "real file size x 8 / pixels (conventional: the quality setting whose real bpp is nearest the target)",
        },
        "unavailable": unavailable,
        "skipped": skipped,
        "failures": failures,
        "records": records,
        "fid": {},
        "seconds": 0.0,
        "partial": True,
        "images_done": 0,
    }
    t_start = time.time()
    for i, path in enumerate(cfg.progress(files, total=len(files), desc="bench") if cfg.show_progress and cfg.progress else files):
        try:
            img = load_image(path)
        except InputError as e:
            skipped.append({"image": path.name, "reason": str(e)})
            continue
        rgb = img.rgb
        name = path.name
        if i < cfg.crop_images:
            box = crop_boxes[name] = texture_box(rgb, cfg.crop_size)
            for b in cfg.bpps:
                crops[(name, b)] = {"box": box, "original": rgb.crop(box)}
        if fid:
            ref_feats.append(rgb)

        for codec in conventional:
            cache: dict = {}
            for b in cfg.bpps:
                with _failures(failures, name, codec.name, b):
                    found = codec.search(rgb, b, cache)
                    enc = measure(lambda: codec.encode(rgb, found.quality))
                    dec = measure(lambda: codec.decode(found.data))
                    add(name, codec.name, b, rgb, dec.value, len(found.data), enc, dec,
                        {"quality": found.quality, "search": found.tried})

        if ours is not None:
            for b in cfg.bpps:
                if not ({"ours", "ours-nodiff"} & set(neural)):
                    break
                with _failures(failures, name, "ours/ours-nodiff", b):
                    enc = measure(lambda: ours.encode(img, b, cfg.steps))
                    res = enc.value
                    extra = {k: _finite(res.params.get(k)) for k in ("t", "quality", "rate_note", "entropy_model")}
                    extra["steps"] = res.params.get("steps")  # what the header says, which the decoder runs
                    if "ours" in neural:
                        dec = measure(lambda: ours.decode(res.data, None))
                        add(name, "ours", b, rgb, dec.value, len(res.data), enc, dec, extra)
                    if "ours-nodiff" in neural:
                        dec = measure(lambda: ours.decode(res.data, 0))
                        add(name, "ours-nodiff", b, rgb, dec.value, len(res.data), enc, dec, {**extra, "steps": 0})
            if "ae" in neural:
                with _failures(failures, name, "ae", None):
                    m = measure(lambda: ours.autoencode(rgb))
                    # one pass (encode+decode) timed as a whole; no bitstream, so no bpp
                    add(name, "ae", None, rgb, m.value, None, None, None,
                        {"autoencode_s_per_mp": m.seconds / (rgb.width * rgb.height / 1e6),
                         "autoencode_peak_mib": m.peak_mib})

        result["images_done"] = i + 1
        if cfg.out:  # a run cut short still leaves every finished image on disk (render with --render)
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            result["seconds"] = time.time() - t_start
            (Path(cfg.out) / "results.json").write_text(to_json(result) + "\n")
            if name in crop_boxes:
                write_crops(crops, Path(cfg.out), only_image=name)

    if not records and skipped:
        raise InputError(f"{cfg.images}: none of the images could be read ({skipped[0]['reason']})")

    fid_values = {}
    if fid and ref_feats:
        ref = fid.features(ref_feats)
        for (codec, target), recs in fid_feats.items():
            fid_values[f"{codec}@{target}"] = fid.distance(ref, fid.features(recs))

    result.update(fid=fid_values, seconds=time.time() - t_start, partial=False)

    result["summary"] = summarize(records)
    result["verdicts"] = verdicts(result["summary"], cfg.bpps, records)
    if cfg.out:
        result["files"] = write_outputs(result, crops, Path(cfg.out))
    return result
