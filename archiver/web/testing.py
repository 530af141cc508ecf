"""A small archived collection for the dashboard's tests and for trying ``archiver serve``:
real files archived through ``archive_file`` (diffusion, its lossless fallback, lossless with
a vaulted original, keep, a corrupt file), so every page has something true to show."""

from __future__ import annotations

from pathlib import Path

from ..catalog.testing import make_context, write_jpeg, write_png

TOKEN = "test-token-0123456789abcdef"

#: the catalog tests' policy, plus diffusion with a vaulted original (the file page then has
#: both pictures: the original from the vault and the decoded reconstruction)
POLICY = """
version: 1
name: web-test
defaults:
  bpp: 0.5
  floor: {min_psnr: 0.0, min_ms_ssim: 0.0, min_region_psnr: 0.0}
  original: replace
  retention_days: 7
rules:
  - name: keepers
    when: {path: ["**/keep/**"]}
    action: keep
  - name: strict
    when: {path: ["**/strict/**"]}
    action: diffusion
    floor: {min_psnr: 99.0, min_ms_ssim: 0.999, min_region_psnr: 99.0}
  - name: textures
    when: {path: ["**/tex/**"]}
    action: diffusion
    original: vault
    retention_days: 30
  - name: vaulted
    when: {path: ["**/vault/**"]}
    action: lossless
    original: vault
    retention_days: 3
default:
  action: lossless
"""


def make_collection(tmp: str | Path, *, codec=None) -> tuple[object, dict[str, int]]:
    """Archive a few images under ``tmp/photos``; returns (context, {name: catalog id})."""
    from ..archive import archive_file
    from ..catalog import queries as q

    tmp = Path(tmp)
    from ..policy.engine import parse_policy_text

    ctx = make_context(tmp, codec=codec)
    ctx.policy = parse_policy_text(POLICY, "web-test")
    photos = tmp / "photos"
    files = {
        "forest": write_jpeg(photos / "tex" / "forest.jpg", seed=1, size=(192, 128)),
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
    with ctx.catalog.session() as s:  # a protected region to draw on the forest's file page
        row = q.latest_version(s, str(files["forest"]))
        cls = dict(row.classification or {})
        cls["protected_regions"] = [[20, 16, 84, 70]]
        row.classification = cls
    return ctx, ids
