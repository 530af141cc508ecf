"""Bit-exact recompression for the ``lossless`` action.

- JPEG -> JPEG XL with JPEG reconstruction data (a standard ``.jxl`` any libjxl reads);
  ``restore`` gives back the identical JPEG bytes.
- Other formats (PNG, TIFF, BMP, ...) -> ``.axl``: a small wrapper (magic, JSON header with the
  original format, mode, palette and metadata — ICC, EXIF, XMP, dpi, PNG text — then a lossless
  JPEG XL payload). ``restore`` re-creates the file in its original format with identical pixels
  and metadata; the *bytes* are identical only when the original was written with the same
  encoder settings, so callers must check (``archive`` records ``restore_exact`` = bytes|pixels).

Everything that cannot be done exactly (CMYK, float, multi-frame, arithmetic-coded JPEG) raises
``LosslessUnsupported`` so the caller keeps the original instead.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

from PIL import Image

from ..errors import ArchiverError

JXL_EXT, AXL_EXT = ".jxl", ".axl"
AXL_MAGIC = b"ARCHIVER-AXL\x00"
AXL_VERSION = 1
_JXL_MODES = {"RGB", "RGBA", "L", "LA", "I;16"}


class LosslessUnsupported(ArchiverError):
    """This file cannot be recompressed exactly; keep the original."""

    exit_code = 3


def _encoder(mode: str, *, container: bool):
    from pillow_jxl import Encoder

    return Encoder(mode=mode, lossless=True, quality=100, decoding_speed=0, effort=7,
                   use_container=container, use_original_profile=True, num_threads=1)


def _decode_jxl(data: bytes):
    from pillow_jxl import Decoder

    try:
        return Decoder(num_threads=1)(data)
    except Exception as e:
        raise ArchiverError(f"corrupt JPEG XL data: {e}") from None


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def compress(source: str | Path | bytes) -> tuple[bytes, str]:
    """Recompress an image exactly; returns (data, extension of the compressed file)."""
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    data = bytes(data)
    if is_jpeg(data):
        return _compress_jpeg(data), JXL_EXT
    return _compress_other(data), AXL_EXT


def _compress_jpeg(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        mode, w, h = im.mode, im.width, im.height
    try:
        out = _encoder("L" if mode == "L" else "RGB", container=True)(data, w, h, jpeg_encode=True)
        ok, _info, back, _icc, _boxes = _decode_jxl(out)
    except Exception as e:
        raise LosslessUnsupported(f"JPEG cannot be transcoded to JPEG XL exactly ({e})") from None
    if not ok or back != data:
        raise LosslessUnsupported("JPEG XL reconstruction is not byte-identical")
    return out


def _b64(b):
    return base64.b64encode(b).decode() if b else None


def _compress_other(data: bytes) -> bytes:
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:
        raise LosslessUnsupported(f"not a readable image ({e})") from None
    if getattr(im, "n_frames", 1) > 1:
        raise LosslessUnsupported("multi-frame images are kept as they are")
    fmt, mode = im.format, im.mode
    header: dict = {"v": AXL_VERSION, "format": fmt, "mode": mode, "size": [im.width, im.height]}
    pix = im
    if mode == "P":
        header["palette"] = _b64(im.palette.tobytes())
        header["palette_mode"] = im.palette.mode
        pix = Image.frombytes("L", im.size, im.tobytes())  # the indices, exactly
    elif mode == "1":
        pix = im.convert("L")
    elif mode == "I" and im.getextrema()[0] >= 0 and im.getextrema()[1] <= 65535:
        pix = im.convert("I;16")
    elif mode in ("I;16B", "I;16L"):
        pix = im.convert("I;16")
    if pix.mode not in _JXL_MODES:
        raise LosslessUnsupported(f"mode {mode} has no exact JPEG XL form")
    info = im.info
    meta = {}
    for key in ("icc_profile", "exif"):
        if info.get(key):
            meta[key] = _b64(info[key])
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if xmp:
        meta["xmp"] = _b64(xmp.encode() if isinstance(xmp, str) else xmp)
    for key in ("dpi", "transparency", "gamma"):
        if key in info:
            v = info[key]
            meta[key] = _b64(v) if isinstance(v, bytes) else (list(v) if isinstance(v, tuple) else v)
            if isinstance(v, bytes):
                meta[key + "_is_bytes"] = True
    if fmt == "PNG" and getattr(im, "text", None):
        meta["text"] = dict(im.text)
    if fmt == "TIFF":
        meta["compression"] = info.get("compression")
    header["meta"] = meta
    try:
        payload = _encoder(pix.mode, container=False)(pix.tobytes(), pix.width, pix.height, jpeg_encode=False)
    except Exception as e:
        raise LosslessUnsupported(f"JPEG XL encoding failed ({e})") from None
    h = json.dumps(header, sort_keys=True).encode()
    return AXL_MAGIC + struct.pack(">BI", AXL_VERSION, len(h)) + h + payload


def restore(data: bytes) -> bytes:
    """The original file's bytes back from ``compress``'s output (byte-exact for JPEG)."""
    if data.startswith(AXL_MAGIC):
        return _restore_other(data)
    ok, _info, back, _icc, _boxes = _decode_jxl(data)
    if not ok:
        raise ArchiverError("this JPEG XL file carries no JPEG reconstruction data")
    return back


def _parse_axl(data: bytes) -> tuple[dict, bytes]:
    n = len(AXL_MAGIC)
    try:
        version, hlen = struct.unpack(">BI", data[n:n + 5])
        header = json.loads(data[n + 5:n + 5 + hlen])
    except Exception as e:
        raise ArchiverError(f"corrupt .axl header ({e})") from None
    if version != AXL_VERSION:
        raise ArchiverError(f".axl version {version} is not supported")
    return header, data[n + 5 + hlen:]


def restore_image(data: bytes) -> Image.Image:
    """The original image (pixels in the original mode, metadata in ``.info``)."""
    if not data.startswith(AXL_MAGIC):
        return Image.open(io.BytesIO(restore(data)))
    header, payload = _parse_axl(data)
    ok, info, raw, _icc, _boxes = _decode_jxl(payload)
    w, h = header["size"]
    mode = header["mode"]
    im = Image.frombytes(info.mode, (w, h), raw)
    if mode == "P":
        im = Image.frombytes("P", (w, h), im.tobytes())
        im.putpalette(base64.b64decode(header["palette"]), header.get("palette_mode", "RGB"))
    elif im.mode != mode:
        im = im.convert(mode)
    meta = header.get("meta", {})
    for key in ("icc_profile", "exif", "xmp"):
        if meta.get(key):
            im.info[key] = base64.b64decode(meta[key])
    for key in ("dpi", "transparency", "gamma"):
        if key in meta:
            v = meta[key]
            im.info[key] = base64.b64decode(v) if meta.get(key + "_is_bytes") else (tuple(v) if isinstance(v, list) else v)
    return im


def _restore_other(data: bytes) -> bytes:
    header, _ = _parse_axl(data)
    im = restore_image(data)
    fmt = header["format"] or "PNG"
    meta = header.get("meta", {})
    kw = {k: im.info[k] for k in ("icc_profile", "exif", "dpi", "transparency") if k in im.info}
    if fmt == "PNG":
        from PIL import PngImagePlugin

        if meta.get("text"):
            pnginfo = PngImagePlugin.PngInfo()
            for k, v in meta["text"].items():
                pnginfo.add_text(k, v)
            kw["pnginfo"] = pnginfo
        if "xmp" in im.info:
            kw["xmp"] = im.info["xmp"]
    elif fmt == "TIFF":
        if meta.get("compression") and meta["compression"] != "raw":
            kw["compression"] = meta["compression"]
        if "xmp" in im.info:
            kw["xmp"] = im.info["xmp"]
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def same_pixels(a: bytes, b: bytes) -> bool:
    """Whether two encoded images decode to the same mode, size, pixels and palette."""
    try:
        with Image.open(io.BytesIO(a)) as x, Image.open(io.BytesIO(b)) as y:
            x.load()
            y.load()
            if (x.mode, x.size) != (y.mode, y.size) or x.tobytes() != y.tobytes():
                return False
            if x.mode == "P" and x.palette.tobytes() != y.palette.tobytes():
                return False
            return True
    except Exception:
        return False
