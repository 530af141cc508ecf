"""Training images: listed, fingerprinted (so the weights record what they were trained on),
decoded once into memory through ``load_image``, and served as random augmented crops."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from archiver.errors import InputError, UsageError
from archiver.imageio import load_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def list_images(data_dir: str | Path) -> list[Path]:
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: training data directory not found")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if "kodak" in {part.lower() for p in files for part in p.relative_to(root).parts} or root.name.lower() == "kodak":
        raise UsageError("refusing to train on Kodak: it is the evaluation set")
    if not files:
        raise UsageError(f"{root}: no images found")
    return files


def fingerprint(root: Path, files: list[Path]) -> dict:
    """Dataset name, file count and SHA-256 of the sorted relative file list with sizes."""
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}\n".encode())
    return {"dataset": root.resolve().name, "path": str(root), "files": len(files), "file_list_sha256": h.hexdigest()}


@dataclass
class ImageSet:
    images: list[np.ndarray]  # HxWx3 uint8
    info: dict
    skipped: list[str]
    names: list[str] = field(default_factory=list)  # paths relative to the data folder

    def __len__(self):
        return len(self.images)


def _scale_for(rel: Path, scale: dict[str, float] | None) -> float:
    """The resize factor for a file: by its top-level folder under the data folder."""
    return float((scale or {}).get(rel.parts[0], 1.0)) if len(rel.parts) > 1 else 1.0


def load_set(data_dir: str | Path, *, min_side: int, max_files: int | None = None,
             scale: dict[str, float] | None = None) -> ImageSet:
    """Decode the training images; ``scale`` resizes the images of named top-level folders (e.g.
    ``{"imagenet-sample": 0.5}``: downscaling hides JPEG artefacts) before the size check."""
    from PIL import Image

    root = Path(data_dir)
    files = list_images(root)
    info = fingerprint(root, files)
    if scale:
        info["scale"] = dict(scale)
    images, skipped, names = [], [], []
    for p in files[:max_files] if max_files else files:
        try:
            im = load_image(p)
        except InputError as e:
            skipped.append(str(e))
            continue
        rgb, f = im.rgb, _scale_for(p.relative_to(root), scale)
        if f != 1.0:
            rgb = rgb.resize((max(1, round(rgb.width * f)), max(1, round(rgb.height * f))), Image.LANCZOS)
        a = np.asarray(rgb)
        if min(a.shape[:2]) < min_side:
            skipped.append(f"{p}: smaller than {min_side} px")
            continue
        images.append(a)
        names.append(p.relative_to(root).as_posix())
    if not images:
        raise UsageError(f"{root}: no usable image at least {min_side} px on each side")
    info["used"] = len(images)
    return ImageSet(images, info, skipped, names)


def holdout(s: ImageSet, n_val: int, val_side: int) -> tuple[list[int], list[int]]:
    """(train indexes, validation indexes) into ``s.images``: the ``n_val`` images at least
    ``val_side`` px a side whose names hash lowest. The choice depends on the names only, so
    every stage, run, crop size and device validates on the same images, never trained on."""
    def key(i: int) -> str:
        return hashlib.sha256(s.names[i].encode()).hexdigest()

    big = [i for i, a in enumerate(s.images) if min(a.shape[:2]) >= val_side]
    if len(big) < 2:
        raise UsageError(f"need at least 2 images of {val_side} px a side to hold some out for validation")
    val = sorted(sorted(big, key=key)[:max(1, min(n_val, len(big) // 2))])
    held = set(val)
    return [i for i in range(len(s.images)) if i not in held], val


def split(images: list[np.ndarray], n_val: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every k-th image held out for validation (deterministic, spread over the whole set)."""
    if n_val <= 0 or len(images) < 2 * n_val:
        return images, images[: max(1, min(n_val, len(images)))]
    k = len(images) // n_val
    val = [im for i, im in enumerate(images) if i % k == 0][:n_val]
    ids = {id(v) for v in val}
    return [im for im in images if id(im) not in ids], val


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float 3xHxW in [-1, 1]."""
    return torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def random_crops(images: list[np.ndarray], n: int, size: int, gen: np.random.Generator) -> torch.Tensor:
    """``n`` random crops with random flips (and 90-degree turns for square crops)."""
    out = []
    for _ in range(n):
        a = images[gen.integers(len(images))]
        h, w = a.shape[:2]
        y, x = gen.integers(h - size + 1), gen.integers(w - size + 1)
        c = a[y:y + size, x:x + size]
        if gen.random() < 0.5:
            c = c[:, ::-1]
        if gen.random() < 0.5:
            c = np.rot90(c)
        out.append(to_tensor(c))
    return torch.stack(out)


def center_crops(images: list[np.ndarray], size: int) -> torch.Tensor:
    out = []
    for a in images:
        h, w = a.shape[:2]
        y, x = (h - size) // 2, (w - size) // 2
        out.append(to_tensor(a[y:y + size, x:x + size]))
    return torch.stack(out)
