"""Exact recompression for the ``lossless`` action, as standard JPEG XL files (``.jxl``) that any
JPEG XL viewer opens.

- JPEG -> JPEG XL with JPEG reconstruction data (``jbrd``). Exactness: **bytes**: ``restore``
  gives back the identical JPEG.
- Other formats (PNG, TIFF, BMP, ...) -> a lossless JPEG XL codestream of the exact pixels (palette
  images: the indices), EXIF in the standard ``Exif`` box and XMP in the standard ``xml `` box.
  Exactness: **pixels + metadata** (see ``content_digest``): the same pixels at full bit depth
  and the same metadata. For PNG every chunk but the pixel data (IDAT) is kept verbatim, in its
  place; IDAT is re-created, so the bytes match the original only when its deflate settings did.
  Byte equality is never promised for these: it would depend on one zlib build.

Both kinds carry a private ``axlr`` box (ignored by viewers) with what ``restore`` needs and the
SHA-256 / content digest of the original: ``restore`` checks its result against it, so a damaged
file is an error, never a wrong image or wrong bytes.

What cannot be represented exactly (CMYK, float, several frames, 16-bit colour, arithmetic-coded
JPEG, ...) raises ``LosslessUnsupported``: the caller keeps the original and records why.
Files written by earlier versions (``.axl``: magic + JSON header + codestream) still restore.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import numbers
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageSequence, PngImagePlugin
from pillow_jxl import Decoder
from pillow_jxl import Encoder

from ...errors import ArchiverError
from ...imageio import stored_bit_depth
from ...reconstruction import PNG_SIGNATURE, png_chunks  # noqa: F401 (png_chunks is used and re-exported)

JXL_EXT, AXL_EXT = ".jxl", ".axl"
AXL_MAGIC = b"ARCHIVER-AXL\x00"
AXL_VERSION = 1
RECORD_BOX = b"axlr"
RECORD_VERSION = 2
JXL_SIGNATURE = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
_JXL_MODES = {"RGB", "RGBA", "L", "LA", "I;16"}
#: what "pixels + metadata" covers besides the pixels, per format (docs/safety.md lists the same)
META_KEYS = ("icc_profile", "exif", "xmp", "dpi", "transparency", "gamma")


class LosslessUnsupported(ArchiverError):
    """This file cannot be recompressed exactly; keep the original."""

    exit_code = 3


def _b64(b):
    return base64.b64encode(b).decode() if b else None


def _unb64(s):
    return base64.b64decode(s) if s else b""


# -- JPEG XL --------------------------------------------------------------------------------------
def _encoder(mode: str, *, container: bool):
    return Encoder(mode=mode, lossless=True, quality=100, decoding_speed=0, effort=7,
                   use_container=container, use_original_profile=True, num_threads=1)


def _decode_jxl(data: bytes):
    try:
        return Decoder(num_threads=1)(bytes(data))
    except Exception as e:
        raise ArchiverError(f"corrupt JPEG XL data: {e}") from None


def _boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """Top-level ISOBMFF boxes: (type, payload start, payload end); ArchiverError when malformed."""
    out, i = [], 0
    while i < len(data):
        if i + 8 > len(data):
            raise ArchiverError("damaged JPEG XL container: a box header is cut off")
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        head = 8
        if size == 1:
            if i + 16 > len(data):
                raise ArchiverError("damaged JPEG XL container: a box header is cut off")
            size = struct.unpack(">Q", data[i + 8:i + 16])[0]
            head = 16
        elif size == 0:
            size = len(data) - i
        if size < head or i + size > len(data):
            raise ArchiverError("damaged JPEG XL container: a box runs past the end")
        out.append((kind, i + head, i + size))
        i += size
    return out


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _with_record(jxl: bytes, record: dict) -> bytes:
    """The record goes right after the signature and ``ftyp`` boxes, before the codestream: a
    file cut short loses its pixels before its record, so it can never pass as a plain JPEG XL."""
    head = sum(b - a + 8 for kind, a, b in _boxes(jxl)[:2])  # 'JXL ' and 'ftyp' (8-byte headers)
    return jxl[:head] + _box(RECORD_BOX, json.dumps(record, sort_keys=True).encode()) + jxl[head:]


#: the box types of ISO/IEC 18181-2 (JPEG XL file format); a file with any other box than these
#: and the restore record is refused: without it, a record box whose type was damaged would pass
#: as "another JPEG XL file" and its (unchecked) codestream be taken at its word
STANDARD_BOXES = frozenset({b"JXL ", b"ftyp", b"jxlc", b"jxlp", b"jxll", b"jxli", b"jbrd", b"Exif", b"xml ",
                            b"jumb", b"brob", b"jhgm"})


def _record(data: bytes) -> dict | None:
    """The ``axlr`` record of a .jxl written here, or None for another JPEG XL file."""
    if not data.startswith(JXL_SIGNATURE):
        return None
    boxes = _boxes(data)
    odd = sorted({kind for kind, _, _ in boxes if kind not in STANDARD_BOXES and kind != RECORD_BOX})
    if odd:
        raise ArchiverError(f"damaged or foreign JPEG XL container: unknown box {odd[0]!r}")
    found = [(a, b) for kind, a, b in boxes if kind == RECORD_BOX]
    if not found:
        return None
    if len(found) > 1:
        raise ArchiverError("damaged archiver .jxl: more than one restore record")
    a, b = found[0]
    try:
        rec = json.loads(data[a:b])
        if not isinstance(rec, dict) or rec.get("v") != RECORD_VERSION:
            raise ValueError(f"version {rec.get('v') if isinstance(rec, dict) else '?'}")
    except (ValueError, UnicodeDecodeError) as e:
        raise ArchiverError(f"damaged archiver .jxl: unreadable restore record ({e})") from None
    return rec


# -- what "the same image" means ------------------------------------------------------------------
def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _png_meta_identity(data: bytes) -> list:
    """Every PNG chunk but the pixel data, with zlib-compressed payloads (zTXt, iCCP, compressed
    iTXt) compared by content, so the identity never depends on a zlib build."""
    ident = []
    for kind, payload, _ in png_chunks(data):
        if kind in (b"IDAT", b"IEND"):
            continue
        if kind == b"IHDR":
            payload = payload[:12]  # size, depth, colour type, compression, filter; not interlace
        elif kind in (b"zTXt", b"iCCP"):
            key, _, rest = payload.partition(b"\x00")
            payload = key + b"\x00" + _inflate(rest[1:])
        elif kind == b"iTXt":
            key, _, rest = payload.partition(b"\x00")
            if rest[:1] == b"\x01":
                lang, _, rest2 = rest[2:].partition(b"\x00")
                tkey, _, text = rest2.partition(b"\x00")
                payload = key + b"\x00z" + lang + b"\x00" + tkey + b"\x00" + _inflate(text)
        ident.append([kind.decode("latin-1"), hashlib.sha256(payload).hexdigest()])
    return ident


def _meta_bytes(v) -> bytes:
    """A metadata value as bytes, numbers normalised (TIFF gives dpi as ints or as rationals)."""
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (tuple, list)) and all(isinstance(x, numbers.Real) for x in v):
        return repr(tuple(round(float(x), 3) for x in v)).encode()
    if isinstance(v, numbers.Real):
        return repr(round(float(v), 6)).encode()
    return repr(v).encode()


def _inflate(b: bytes) -> bytes:
    try:
        return zlib.decompress(b)
    except zlib.error:
        return b"\x00corrupt:" + b


def _stored_depth(im: Image.Image, data: bytes) -> int:
    return stored_bit_depth(im, data[:32])


def content_digest(data: bytes) -> str:
    """The identity of an image for "pixels + metadata" exactness: every frame's mode, size,
    pixels (and palette) at full bit depth, plus the metadata (PNG: every chunk but IDAT; other
    formats: ICC, EXIF, XMP, dpi, transparency, gamma). ``LosslessUnsupported`` when the pixels
    cannot be read at full depth (16-bit colour)."""
    h = hashlib.sha256()
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            depth = _stored_depth(im, data)
            h.update(f"{fmt}:{depth}:".encode())
            for frame in ImageSequence.Iterator(im):
                frame.load()
                if depth > 8 and frame.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
                    raise LosslessUnsupported(f"{depth}-bit {frame.mode} samples cannot be read at full depth here")
                h.update(f"{frame.mode}:{frame.size}:".encode())
                h.update(frame.tobytes())
                if frame.mode in ("P", "PA"):
                    h.update(frame.palette.tobytes())
            meta = {}
            if fmt != "PNG":
                for k in META_KEYS:
                    v = im.info.get(k)
                    if k == "xmp" and v is None:
                        v = im.info.get("XML:com.adobe.xmp")
                    if v is not None:
                        meta[k] = hashlib.sha256(_meta_bytes(v)).hexdigest()
    except LosslessUnsupported:
        raise
    except Exception as e:
        raise LosslessUnsupported(f"not a readable image ({e})") from None
    if fmt == "PNG":
        meta = {"png": _png_meta_identity(data)}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def same_pixels(a: bytes, b: bytes) -> bool:
    """Whether two encoded images are the same image (``content_digest``)."""
    try:
        return content_digest(a) == content_digest(b)
    except ArchiverError:
        return False


# -- compress ------------------------------------------------------------------------------------
def compress(source: str | Path | bytes) -> tuple[bytes, str]:
    """Recompress an image exactly; returns (data, extension of the compressed file)."""
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    data = bytes(data)
    if is_jpeg(data):
        return _compress_jpeg(data), JXL_EXT
    return _compress_pixels(data), JXL_EXT


def _compress_jpeg(data: bytes) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode, w, h = im.mode, im.width, im.height
    except Exception as e:
        raise LosslessUnsupported(f"not a readable image ({e})") from None
    try:
        out = _encoder("L" if mode == "L" else "RGB", container=True)(data, w, h, jpeg_encode=True)
        ok, _info, back, _icc, _boxes = _decode_jxl(out)
    except Exception as e:
        raise LosslessUnsupported(f"JPEG cannot be transcoded to JPEG XL exactly ({e})") from None
    if not ok or back != data:
        raise LosslessUnsupported("JPEG XL reconstruction is not byte-identical")
    return _with_record(out, {"v": RECORD_VERSION, "kind": "jpeg", "sha256": hashlib.sha256(data).hexdigest()})


def _pixels_for_jxl(im: Image.Image, record: dict) -> Image.Image:
    mode = im.mode
    if mode == "P":
        record["palette"] = _b64(im.palette.tobytes())
        record["palette_mode"] = im.palette.mode
        return Image.frombytes("L", im.size, im.tobytes())  # the indices, exactly
    if mode == "1":
        return im.convert("L")
    if mode == "I":
        lo, hi = im.getextrema()
        if lo >= 0 and hi <= 65535:
            return im.convert("I;16")
    if mode in ("I;16B", "I;16L"):
        return im.convert("I;16")
    return im


def _compress_pixels(data: bytes) -> bytes:
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:
        raise LosslessUnsupported(f"not a readable image ({e})") from None
    if getattr(im, "n_frames", 1) > 1:
        raise LosslessUnsupported(f"{im.n_frames} frames: multi-frame images are kept as they are")
    depth = _stored_depth(im, data)
    if depth > 8 and im.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise LosslessUnsupported(f"{depth}-bit {im.mode} has no exact JPEG XL form here")
    digest = content_digest(data)
    fmt = im.format
    record: dict = {"v": RECORD_VERSION, "kind": "pixels", "format": fmt, "mode": im.mode,
                    "size": [im.width, im.height], "sha256": hashlib.sha256(data).hexdigest(), "digest": digest}
    pix = _pixels_for_jxl(im, record)
    if pix.mode not in _JXL_MODES:
        raise LosslessUnsupported(f"mode {im.mode} has no exact JPEG XL form")
    info = im.info
    exif = info.get("exif")
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    xmp = xmp.encode() if isinstance(xmp, str) else xmp
    if fmt == "PNG":
        try:
            chunks = png_chunks(data)
        except ArchiverError as e:
            raise LosslessUnsupported(str(e)) from None
        kinds = [k for k, _, _ in chunks]
        record["png"] = {"chunks": [_b64(raw) for k, _, raw in chunks if k not in (b"IDAT", b"IEND")],
                         "idat_at": kinds.index(b"IDAT") if b"IDAT" in kinds else None}
    else:
        meta = {}
        for key in META_KEYS:
            v = info.get(key) if key != "xmp" else xmp
            if v is None:
                continue
            if isinstance(v, tuple):
                v = [float(x) if isinstance(x, numbers.Real) else x for x in v]
            elif isinstance(v, numbers.Real) and not isinstance(v, bool):
                v = float(v)
            meta[key] = _b64(v) if isinstance(v, bytes) else v
            if isinstance(v, bytes):
                meta[key + "_is_bytes"] = True
        if fmt == "TIFF":
            meta["compression"] = info.get("compression")
        record["meta"] = meta
    boxes = {}
    if exif:
        tiff = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
        boxes["exif"] = b"\x00\x00\x00\x00" + tiff  # the Exif box starts with the TIFF header offset
    if xmp:
        boxes["xmp"] = xmp
    try:
        payload = _encoder(pix.mode, container=True)(pix.tobytes(), pix.width, pix.height, jpeg_encode=False, **boxes)
        return _with_record(payload, record)
    except Exception as e:
        raise LosslessUnsupported(f"JPEG XL encoding failed ({type(e).__name__}: {e})") from None


# -- restore -------------------------------------------------------------------------------------
def restore(data: bytes) -> bytes:
    """The original file back from ``compress``'s output: the identical bytes for JPEG, the same
    image (``content_digest``) for other formats. ArchiverError when the file is damaged."""
    data = bytes(data)
    if data.startswith(AXL_MAGIC):
        return _restore_axl(data)
    rec = _record(data)
    if rec is None:
        ok, _info, back, _icc, _boxes = _decode_jxl(data)
        if not ok:
            raise ArchiverError("this JPEG XL file carries no JPEG reconstruction data and no archiver record")
        return back
    if rec.get("kind") == "jpeg":
        ok, _info, back, _icc, _boxes = _decode_jxl(data)
        if not ok or hashlib.sha256(back).hexdigest() != rec.get("sha256"):
            raise ArchiverError("damaged .jxl: the reconstructed JPEG does not match its recorded SHA-256")
        return back
    if rec.get("kind") != "pixels":
        raise ArchiverError(f"damaged archiver .jxl: unknown kind {rec.get('kind')!r}")
    try:
        out = _rebuild(data, rec)
    except ArchiverError:
        raise
    except Exception as e:  # any inconsistency in a damaged file
        raise ArchiverError(f"damaged .jxl: cannot rebuild the image ({type(e).__name__}: {e})") from None
    if hashlib.sha256(out).hexdigest() != rec.get("sha256"):
        try:
            same = content_digest(out) == rec.get("digest")
        except ArchiverError:
            same = False
        if not same:
            raise ArchiverError("damaged .jxl: the rebuilt image does not match its recorded digest")
    return out


def restore_image(data: bytes) -> Image.Image:
    """The original image (pixels in the original mode, metadata in ``.info``)."""
    return Image.open(io.BytesIO(restore(data)))


def _pixels_back(data: bytes, rec: dict) -> Image.Image:
    ok, info, raw, _icc, _boxes = _decode_jxl(data)
    return _in_recorded_mode(Image.frombytes(info.mode, tuple(rec["size"]), raw), rec)


def _in_recorded_mode(im: Image.Image, rec: dict) -> Image.Image:
    """Decoded pixels back in the original's mode (a palette image gets its indices and palette
    back), for the current record and the old ``.axl`` header alike."""
    mode = rec["mode"]
    if mode == "P":
        im = Image.frombytes("P", im.size, im.tobytes())
        im.putpalette(_unb64(rec["palette"]), rec.get("palette_mode", "RGB"))
    elif im.mode != mode:
        im = im.convert(mode)
    return im


def _rebuild(data: bytes, rec: dict) -> bytes:
    im = _pixels_back(data, rec)
    if rec.get("format") == "PNG":
        return _rebuild_png(im, rec["png"])
    meta = rec.get("meta", {})
    kw = {}
    for key in META_KEYS:
        if key in meta:
            v = meta[key]
            kw[key] = _unb64(v) if meta.get(key + "_is_bytes") else (tuple(v) if isinstance(v, list) else v)
    if rec.get("format") == "TIFF" and meta.get("compression") and meta["compression"] != "raw":
        kw["compression"] = meta["compression"]
    kw.pop("gamma", None)
    out = io.BytesIO()
    im.save(out, rec.get("format") or "PNG", **kw)
    return out.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _rebuild_png(im: Image.Image, png: dict) -> bytes:
    """The original's chunks, verbatim and in place, around pixel data written anew."""
    chunks = [_unb64(c) for c in png["chunks"]]
    ihdr = chunks[0]
    if ihdr[4:8] != b"IHDR":
        raise ArchiverError("damaged .jxl: the recorded PNG does not start with IHDR")
    depth = ihdr[16]
    kw = {"bits": depth} if im.mode == "P" and depth < 8 else {}
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    ours = png_chunks(buf.getvalue())
    if ours[0][1][:12] != ihdr[8:20]:
        raise ArchiverError("the pixels cannot be written in the original PNG layout")
    idat = b"".join(raw for k, _, raw in ours if k == b"IDAT")
    if ihdr[20] != 0:  # interlaced: the new pixel data is not, and IHDR must say so
        chunks[0] = _chunk(b"IHDR", ihdr[8:20] + b"\x00")
    at = png["idat_at"] if png.get("idat_at") is not None else len(chunks)
    return PNG_SIGNATURE + b"".join(chunks[:at]) + idat + b"".join(chunks[at:]) + _chunk(b"IEND", b"")


# -- files written by earlier versions (.axl) ------------------------------------------------------
def _restore_axl(data: bytes) -> bytes:
    n = len(AXL_MAGIC)
    try:
        version, hlen = struct.unpack(">BI", data[n:n + 5])
        header = json.loads(data[n + 5:n + 5 + hlen])
        if version != AXL_VERSION or not isinstance(header, dict):
            raise ValueError(f"version {version}")
        payload = data[n + 5 + hlen:]
        w, h = header["size"]
        ok, info, raw, _icc, _boxes = _decode_jxl(payload)
        im = Image.frombytes(info.mode, (w, h), raw)
    except ArchiverError:
        raise
    except Exception as e:
        raise ArchiverError(f"corrupt .axl file ({type(e).__name__}: {e})") from None
    im = _in_recorded_mode(im, header)
    meta = header.get("meta", {})
    fmt = header.get("format") or "PNG"
    kw = {}
    for key in ("icc_profile", "exif", "dpi", "transparency"):
        if key in meta:
            v = meta[key]
            kw[key] = _unb64(v) if meta.get(key + "_is_bytes") or key in ("icc_profile", "exif") else (
                tuple(v) if isinstance(v, list) else v)
    if meta.get("xmp"):
        kw["xmp"] = _unb64(meta["xmp"])
    if fmt == "PNG" and meta.get("text"):
        pnginfo = PngImagePlugin.PngInfo()
        for k, v in meta["text"].items():
            pnginfo.add_text(k, v)
        kw["pnginfo"] = pnginfo
    elif fmt == "TIFF" and meta.get("compression") and meta["compression"] != "raw":
        kw["compression"] = meta["compression"]
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def is_restorable(data: bytes) -> bool:
    """Whether ``data`` is a file ``restore`` reads: an .axl file, or a JPEG XL container with a
    restore record or JPEG reconstruction data (or a damaged container: ``restore`` says how);
    not a plain JPEG XL image."""
    if data.startswith(AXL_MAGIC):
        return True
    if not data.startswith(JXL_SIGNATURE):
        return False
    try:
        return any(kind in (RECORD_BOX, b"jbrd") for kind, _, _ in _boxes(data))
    except ArchiverError:
        return True


def kind_of(data: bytes) -> str | None:
    """``jpeg`` / ``pixels`` for a lossless file written here (``axl`` for the old format)."""
    if data.startswith(AXL_MAGIC):
        return "axl"
    try:
        rec = _record(data)
    except ArchiverError:
        return None
    return rec.get("kind") if rec else None
