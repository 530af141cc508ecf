"""Previews: a small standard image (WebP or AVIF, 512 px on the long side by default) beside
each archived file, or at the same relative path in a mirror tree, so that ordinary file browsers
still show a thumbnail where the original was replaced by a ``.dlc``/``.jxl``/``.axl`` file.

A preview is never mistaken for an original: its name always ends in ``.preview.webp`` or
``.preview.avif`` (``is_preview``), which the watcher, migrate and ``archive`` skip; it is
recorded on the catalog row (``preview_path``) with an event, and removed when the file is
restored. The step that writes it is ``archiver.work.preview``: after the original was removed,
from the original's pixels (orientation applied) while they are in memory. Writing a preview is
a convenience: it never fails the archiving of a file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .errors import UsageError

#: the suffix every preview name ends with, before the image extension
MARK = ".preview"
FORMATS = {"webp": ("WEBP", ".webp"), "avif": ("AVIF", ".avif")}


@dataclass
class PreviewSettings:
    size: int = 512
    format: str = "webp"
    where: str = "beside"  # beside | mirror
    mirror_dir: str | None = None
    quality: int = 70


def preview_settings(cfg) -> PreviewSettings | None:
    """``cfg.preview`` checked; None when previews are off."""
    raw = getattr(cfg, "preview", None)
    if raw in (None, False):
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError("config 'preview' must be null or a mapping (size, format, where, mirror_dir, quality)")
    unknown = sorted(set(raw) - set(PreviewSettings.__dataclass_fields__))
    if unknown:
        raise UsageError(f"unknown preview setting(s): {', '.join(unknown)}")
    ps = PreviewSettings(**raw)
    if not isinstance(ps.size, int) or not 16 <= ps.size <= 4096:
        raise UsageError(f"preview.size: a number of pixels from 16 to 4096, not {ps.size!r}")
    if ps.format not in FORMATS:
        raise UsageError(f"preview.format: one of {', '.join(FORMATS)}, not {ps.format!r}")
    if ps.where not in ("beside", "mirror"):
        raise UsageError(f"preview.where: 'beside' or 'mirror', not {ps.where!r}")
    if ps.where == "mirror" and not ps.mirror_dir:
        raise UsageError("preview.where: mirror needs preview.mirror_dir")
    if not isinstance(ps.quality, int) or not 1 <= ps.quality <= 100:
        raise UsageError(f"preview.quality: 1 to 100, not {ps.quality!r}")
    return ps


def is_preview(path: str | os.PathLike) -> bool:
    name = os.path.basename(os.fspath(path)).lower()
    return any(name.endswith(MARK + ext) for _, ext in FORMATS.values())


def preview_path(ps: PreviewSettings, path: str, root: str | None) -> Path:
    """Where the preview of ``path`` goes (always a name ``is_preview`` recognises)."""
    ext = MARK + FORMATS[ps.format][1]
    p = Path(path)
    if ps.where == "beside":
        return p.with_name(p.name + ext)
    base = Path(os.path.abspath(ps.mirror_dir))
    rel = os.path.relpath(path, root) if root else p.name
    if rel.startswith(".."):
        rel = p.name
    out = Path(os.path.normpath(base / (rel + ext)))
    if os.path.commonpath([str(base), str(out)]) != str(base):
        raise UsageError(f"{path}: its preview would leave {base}")
    return out


def render(img, ps: PreviewSettings) -> bytes:
    """``img`` (a PIL image) shrunk to ``ps.size`` on its long side, encoded as a standard image."""
    im = img.convert("RGB") if img.mode not in ("RGB", "L") else img.copy()
    im.thumbnail((ps.size, ps.size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    fmt = FORMATS[ps.format][0]
    im.save(out, fmt, quality=ps.quality, **({"method": 4} if fmt == "WEBP" else {}))
    return out.getvalue()
