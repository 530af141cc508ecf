"""Helpers for tests of archive/restore/verify: small images, a path-driven policy, codecs.

``TEST_POLICY`` decides by directory name only (no classifier runs), so tests choose the
action per file: ``keep/`` -> keep, ``tex/`` -> diffusion (floor 0 and no structure check, so
even an untrained backbone passes), ``strict/`` -> diffusion with an impossible floor (forces the lossless
fallback), ``vault/`` -> lossless + vault, anything else -> lossless + replace.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..codecs import Codec, CodecSettings, Encoded, Exactness, suffixes
from ..codecs.bound import Codecs
from ..codecs.diffusion import DiffusionCodec
from ..errors import ContainerError
from ..storage.atomic import is_private_name
from ..storage.vault import Vault

TEST_POLICY = """
version: 1
name: test
defaults:
  bpp: 0.5
  floor: {min_psnr: 0.0, min_ms_ssim: 0.0, min_region_psnr: 0.0}
  original: replace
  retention_days: 7
rules:
  - name: keepers
    when:
      path: ["**/keep/**"]
    action: keep
  - name: strict
    when:
      path: ["**/strict/**"]
    action: diffusion
    allow_generative: true
    floor: {min_psnr: 99.0, min_ms_ssim: 0.999, min_region_psnr: 99.0}
  - name: tex
    when:
      path: ["**/tex/**"]
    action: diffusion
    allow_generative: true
    # an untrained backbone reconstructs nothing like the picture: the structure check is off here
    floor: {max_phash_distance: 64, max_dhash_distance: 64}
  - name: vaulted
    when:
      path: ["**/vault/**"]
    action: lossless
    original: vault
    retention_days: 3
default:
  action: lossless
"""


def make_policy(path: str | Path | None = None):
    """The parsed ``TEST_POLICY``; with ``path`` also written there (for CLI runs)."""
    from ..policy.engine import parse_policy_text  # heavy: yaml (via policy.engine), which testing.catalog does not load at import

    if path is not None:
        Path(path).write_text(TEST_POLICY)
    return parse_policy_text(TEST_POLICY, "test-policy")


def smooth_image(seed: int = 0, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A smooth gradient with a little noise: JPEG XL recompresses it smaller than the JPEG."""
    rng = np.random.default_rng(seed)
    w, h = size
    a = np.cumsum(rng.random((h, w, 3)) * 12, axis=1) + np.linspace(0, 60, h)[:, None, None]
    return np.clip(a, 0, 255).astype("uint8")


def write_jpeg(path: str | Path, seed: int = 0, size=(160, 120), quality: int = 90) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x010F] = "ArchiverTestCam"  # Make
    Image.fromarray(smooth_image(seed, size)).save(path, "JPEG", quality=quality, exif=exif.tobytes())
    return path


def write_png(path: str | Path, seed: int = 0, size=(160, 120)) -> Path:
    """A flat-coloured graphic: compresses well losslessly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    a = (smooth_image(seed, size) // 64 * 64).astype("uint8")
    Image.fromarray(a).save(path, "PNG")
    return path


def photo_bytes(seed=0, size=(192, 160), fmt="PNG", quality=92) -> bytes:
    """Texture, edges, a flat patch and noise: a photo-like test image for the lossy codecs' searches."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([128 + 60 * np.sin(xx / 7 + seed), 128 + 60 * np.cos(yy / 9), (xx + yy) % 256 * 0.5 + 60], -1)
    a = a + rng.normal(0, 12, a.shape)
    a[h // 3: h // 2, w // 4: 3 * w // 4] = (30, 40, 200)
    img = Image.fromarray(np.clip(a, 0, 255).astype("uint8"))
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()



class FakeCodec(Codec):
    """A stand-in for the diffusion codec (registered name ``diffusion``, so rows and restores
    behave as with the real one): low-quality WebP inside a marker. Deterministic and fast."""

    name = "diffusion"
    ext = ".dlc"
    exactness = Exactness.APPROX

    def encode(self, source, target) -> Encoded:
        b = io.BytesIO()
        source.image.rgb.save(b, "WEBP", quality=20)
        data = b"FAKEDLC1" + b.getvalue()
        return Encoded(data, self.name, self.version, self.ext, len(data) * 8 / source.pixels, "fake", "0" * 64)

    def decode(self, data: bytes) -> Image.Image:
        if not data.startswith(b"FAKEDLC1"):
            raise ContainerError("not a fake .dlc")
        try:
            im = Image.open(io.BytesIO(data[8:]))
            return im.convert("RGB")
        except Exception as e:
            raise ContainerError(f"damaged fake .dlc ({e})") from None


def random_tiny_codec(seed: int = 0):
    """The real diffusion codec on an untrained tiny backbone (deterministic per seed)."""
    from ..codecs.diffusion.backbones.tiny import random_tiny  # heavy: torch (via codecs.diffusion.backbones.tiny), which testing.catalog does not load at import
    return DiffusionCodec(CodecSettings(decode_steps=2), backbone=random_tiny(seed, device="cpu"))


def make_context(tmp: str | Path, *, codec=None, catalog_url: str | None = None, **kw):
    """A context on a fresh SQLite catalog (created, or ``catalog_url``'s) with ``TEST_POLICY``; ``codec`` stands in for the
    diffusion codec (default: ``FakeCodec``); the other codecs are the registry's own."""
    from ..work.context import ArchiveContext  # heavy: sqlalchemy (via work.context), which testing.catalog does not load at import
    from ..catalog.db import open_catalog  # heavy: sqlalchemy (via catalog.db), which testing.catalog does not load at import

    tmp = Path(tmp)
    cat = open_catalog(catalog_url or f"sqlite:///{tmp / 'catalog.sqlite'}", create=True)
    codecs = Codecs(overrides={"diffusion": codec if codec is not None else FakeCodec()})
    return ArchiveContext(catalog=cat, policy=make_policy(), vault=Vault(tmp / "vault"), codecs=codecs,
                          lock_dir=tmp / "locks", **kw)


def disk_problems(ctx, directory: str | Path) -> list[str]:
    """Where the catalog and ``directory`` disagree (for crash tests): rows stuck in progress,
    committed rows whose files are missing/damaged or whose original status is wrong, temp
    leftovers, and compressed files the catalog does not know."""
    from ..catalog.models import COMMITTED, IN_PROGRESS, ORIG_KEPT, ORIG_PRESENT, ORIG_REMOVED, FileVersion  # heavy: sqlalchemy (via catalog.models), which testing.catalog does not load at import
    problems = []
    directory = Path(directory)
    with ctx.catalog.session() as s:
        rows = [r for r in s.query(FileVersion).order_by(FileVersion.id) if str(r.path).startswith(str(directory))]
    known = set()
    for r in rows:
        if r.state in IN_PROGRESS:
            problems.append(f"{r.path}: stuck in {r.state}")
        if r.compressed_path:
            known.add(r.compressed_path)
        if r.state != COMMITTED:
            continue
        if r.compressed_path:
            cp = Path(r.compressed_path)
            if not cp.is_file() or hashlib.sha256(cp.read_bytes()).hexdigest() != r.compressed_sha256:
                problems.append(f"{r.path}: compressed file missing or damaged")
        p = Path(r.path)
        latest = [x for x in rows if x.path == r.path][-1]
        if r.original_status == ORIG_REMOVED and p.exists() and latest.id == r.id:
            problems.append(f"{r.path}: catalog says removed but the file is there")
        if r.original_status in (ORIG_KEPT, ORIG_PRESENT) and not p.exists():
            problems.append(f"{r.path}: catalog says {r.original_status} but the file is gone")
    for f in directory.rglob("*"):
        if f.is_file():
            if is_private_name(f):
                problems.append(f"temp or taken leftover {f}")
            elif f.suffix in suffixes() and str(f) not in known:
                problems.append(f"unknown compressed file {f}")
    return problems
