"""The codec on files: read an image and write its .dlc, read a .dlc and write an image.

Writes are atomic (``storage.atomic``) with the permissions a plainly created file would get.
Decoded images are written in the format of the output's suffix, with the original's EXIF, ICC
profile and XMP where the format can hold them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ...errors import UsageError
from ...imageio import ImageMetadata, load_image
from ...storage import atomic

if TYPE_CHECKING:
    from .backbones.base import Backbone
    from .pipeline import DecodedImage, EncodeResult

# the pipeline (torch) is imported by the functions that code: checking an output name or a
# file's header must not cost a torch import (docs/operations.md, "Start-up time")


def output_file_mode() -> int:
    """Permissions a plainly created file would get (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _save_kwargs(fmt: str, meta: ImageMetadata) -> dict:
    kw = {}
    if meta.exif and fmt in ("PNG", "JPEG", "WEBP", "TIFF", "JXL", "AVIF", "HEIF"):
        kw["exif"] = meta.exif
    if meta.icc_profile and fmt in ("PNG", "JPEG", "WEBP", "TIFF", "JXL", "AVIF", "HEIF"):
        kw["icc_profile"] = meta.icc_profile
    if meta.xmp:
        if fmt == "PNG":
            info = PngInfo()
            info.add_itxt("XML:com.adobe.xmp", meta.xmp.decode("utf-8", "replace"))
            kw["pnginfo"] = info
        elif fmt in ("JPEG", "WEBP", "TIFF", "JXL", "AVIF"):
            kw["xmp"] = meta.xmp
    if fmt == "JPEG":
        kw["quality"] = 95
    if fmt == "WEBP":
        kw["lossless"] = True
    return kw


def format_for(path: str | Path) -> str:
    """PIL format from the output suffix (PNG when there is none)."""
    ext = Path(path).suffix.lower()
    if not ext:
        return "PNG"
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise UsageError(f"{path}: cannot write images with suffix {ext!r} (try .png)")
    return fmt


def image_bytes(decoded: DecodedImage, fmt: str = "PNG") -> bytes:
    """The decoded image serialised in ``fmt`` with the original's metadata."""
    img = decoded.image
    kw = _save_kwargs(fmt, decoded.metadata)
    buf = io.BytesIO()
    try:
        img.save(buf, fmt, **kw)
    except (OSError, ValueError, KeyError):
        # the format cannot hold this mode (e.g. JPEG and alpha or 16 bits): the closest it can
        fallback = img.convert("RGBA" if "A" in img.mode and fmt != "JPEG" else ("L" if img.mode in ("L", "LA", "I;16") else "RGB"))
        buf = io.BytesIO()
        fallback.save(buf, fmt, **kw)
    return buf.getvalue()


def encode_file(src: str | Path, dst: str | Path, backbone: Backbone, *, bpp: Optional[float] = None,
                quality: Optional[float] = None, steps: Optional[int] = None, search_t: bool = False,
                roi=None, max_pixels: Optional[int] = None, overwrite: bool = True) -> EncodeResult:
    """Read an image file, encode it and write the .dlc atomically."""
    from .pipeline import encode_image  # heavy: compressai, torch (via codecs.diffusion.pipeline), which codecs.diffusion.files does not load at import

    img = load_image(src) if max_pixels is None else load_image(src, max_pixels=max_pixels)
    result = encode_image(img, backbone, bpp=bpp, quality=quality, steps=steps, search_t=search_t, roi=roi)
    atomic.write_bytes(dst, result.data, overwrite=overwrite, mode=output_file_mode())
    return result


def decode_file(src: str | Path, dst: str | Path, *, backbone: Optional[Backbone] = None,
                steps: Optional[int] = None, overwrite: bool = True) -> DecodedImage:
    """Decode a .dlc file to an image file (format from ``dst``'s suffix), written atomically."""
    from .pipeline import decode_bytes  # heavy: compressai, torch (via codecs.diffusion.pipeline), which codecs.diffusion.files does not load at import

    fmt = format_for(dst)
    try:
        data = Path(src).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{src}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{src}: is a directory") from None
    decoded = decode_bytes(data, backbone, steps=steps)
    atomic.write_bytes(dst, image_bytes(decoded, fmt), overwrite=overwrite, mode=output_file_mode())
    return decoded
