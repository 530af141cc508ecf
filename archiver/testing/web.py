"""A small archived collection for the dashboard's tests and for trying ``archiver serve``:
real files archived through ``archive_file`` (diffusion, its lossless fallback, lossless with
a vaulted original, keep, a corrupt file), so every page has something true to show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..preview import PreviewSettings
from .catalog import make_context, TEST_POLICY, write_jpeg, write_png

TOKEN = "test-token-0123456789abcdef"


def _policy_text() -> str:
    """The catalog tests' policy, with its diffusion rule keeping the original in the vault (the
    file page then has both pictures: the original from the vault and the decoded image)."""
    import yaml  # heavy: yaml, which testing.web does not load at import

    p = yaml.safe_load(TEST_POLICY)
    p["name"] = "web-test"
    for rule in p["rules"]:
        if rule["name"] == "tex":
            rule.update(name="textures", original="vault", retention_days=30)
    return yaml.safe_dump(p, sort_keys=False)


def landscape(seed: int = 0, size: tuple[int, int] = (192, 128)) -> "np.ndarray":
    """A synthetic photo-like scene (sky, hills, textured grass) that a person can recognise on
    a screenshot, unlike a plain gradient."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)

    def noise(scale: int) -> "np.ndarray":
        g = rng.random((h // scale + 2, w // scale + 2)).astype(np.float32)
        return np.kron(g, np.ones((scale, scale), np.float32))[:h, :w]

    texture = sum(noise(s) / s ** 0.5 for s in (1, 2, 4, 8))
    texture = (texture - texture.mean()) / texture.std()
    horizon = h * 0.45 + 10 * np.sin(x / w * 6.28 + seed) + 6 * np.sin(x / w * 17)
    sky = np.stack([110 + 60 * y / h, 160 + 50 * y / h, np.full_like(y, 235)], -1)
    grass = np.stack([60 + 12 * texture, 120 + 25 * texture + 30 * (y / h), 40 + 10 * texture], -1)
    img = np.where((y > horizon)[..., None], grass, sky)
    sun = ((x - w * 0.75) ** 2 + (y - h * 0.18) ** 2) < (h * 0.08) ** 2
    img[sun] = (255, 236, 150)
    return np.clip(img, 0, 255).astype("uint8")


def write_photo(path: str | Path, seed: int = 0, size=(192, 128), quality: int = 92) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(landscape(seed, size)).save(path, "JPEG", quality=quality)
    return path


def make_collection(tmp: str | Path, *, codec=None, preview: bool = True) -> tuple[object, dict[str, int]]:
    """Archive a few images under ``tmp/photos`` (with 512-px WebP previews beside the files
    whose originals left); returns (context, {name: catalog id})."""
    from ..work import archive_file  # heavy: sqlalchemy (via work), which testing.web does not load at import
    from ..catalog import queries as q  # heavy: sqlalchemy (via catalog.queries), which testing.web does not load at import

    tmp = Path(tmp)
    from ..policy.engine import parse_policy_text  # heavy: yaml (via policy.engine), which testing.web does not load at import

    ctx = make_context(tmp, codec=codec)
    ctx.policy = parse_policy_text(_policy_text(), "web-test")
    if preview:
        ctx.preview = PreviewSettings()
    photos = tmp / "photos"
    files = {
        "forest": write_photo(photos / "tex" / "forest.jpg", seed=1),
        "strict": write_jpeg(photos / "strict" / "wall.jpg", seed=2),
        "vaulted": write_jpeg(photos / "vault" / "beach.jpg", seed=3),
        "graphic": write_png(photos / "misc" / "chart.png", seed=4),
        "kept": write_jpeg(photos / "keep" / "family.jpg", seed=5),
    }
    bad = photos / "misc" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    files["broken"] = bad
    ids = {}
    for name, p in files.items():
        ctx.root = str(photos)
        out = archive_file(p, ctx)
        ids[name] = out.file_id
    with ctx.catalog.session() as s:  # a protected region (around the sun) to draw on the forest's file page
        row = q.latest_version(s, str(files["forest"]))
        cls = dict(row.classification or {})
        cls["protected_regions"] = [[128, 8, 160, 40]]
        row.classification = cls
    return ctx, ids


AVIF_POLICY = """
version: 1
name: web-test-avif
defaults:
  floor: {min_psnr: 0.0, min_ms_ssim: 0.0, min_region_psnr: 0.0}
  original: replace
rules:
  - name: small
    when: {path: ["**/av/**"]}
    action: avif
default:
  action: lossless
"""


def add_avif(ctx, tmp: str | Path) -> int:
    """Archive one more photo (``photos/av/sky.jpg``) as AVIF, its original replaced and no
    preview beside it, into ``make_collection``'s catalog; returns its catalog id."""
    from ..policy.engine import parse_policy_text  # heavy: yaml (via policy.engine), which testing.web does not load at import
    from ..work import archive_file  # heavy: sqlalchemy (via work), which testing.web does not load at import

    policy, preview = ctx.policy, ctx.preview
    ctx.policy, ctx.preview = parse_policy_text(AVIF_POLICY, "web-test-avif"), None
    try:
        ctx.root = str(Path(tmp) / "photos")
        out = archive_file(write_jpeg(Path(tmp) / "photos" / "av" / "sky.jpg", seed=7), ctx)
    finally:
        ctx.policy, ctx.preview = policy, preview
    if out.state != "committed" or out.action != "avif":
        raise RuntimeError(f"the AVIF test file was not archived as AVIF: {out}")
    return out.file_id
