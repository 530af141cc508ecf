"""How archiver writes a lossy codec's image so that nobody takes it for the original: marked as
an approximate reconstruction (XMP, EXIF description, a PNG text chunk), with the original's
metadata: the EXIF, ICC profile and XMP the decoded image carries, and a PNG original's own text,
gamma, colour and resolution chunks, which no lossy format carries (the catalog keeps them in the
row's ``codec_params`` under ``PNG_CHUNKS_PARAM``). ``restore`` and ``decode`` both write through
``marked_bytes``.
"""

from __future__ import annotations

import base64
import io
import os
import struct
from xml.sax.saxutils import escape

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .errors import ArchiverError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(type, payload, whole chunk) of a PNG; ArchiverError when the chunk structure is broken."""
    if not data.startswith(PNG_SIGNATURE):
        raise ArchiverError("not a PNG file")
    out, i = [], len(PNG_SIGNATURE)
    while i < len(data):
        if i + 12 > len(data):
            raise ArchiverError("damaged PNG: a chunk is cut off")
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        end = i + 12 + n
        if end > len(data):
            raise ArchiverError("damaged PNG: a chunk runs past the end")
        out.append((kind, data[i + 8:i + 8 + n], data[i:end]))
        i = end
        if kind == b"IEND":
            break
    return out


#: where a row's ``codec_params`` keeps a PNG original's chunks
PNG_CHUNKS_PARAM = "png_chunks"
#: the ancillary chunks that describe the image and do not depend on its pixel encoding
KEPT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt", b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"tIME")
#: at most this many payload bytes are kept per file (a catalog row is no file store)
MAX_BYTES = 256 * 1024
_XMP_KEY = b"XML:com.adobe.xmp\x00"  # XMP is carried as XMP (and marked there), not twice


def kept_chunks(data: bytes) -> list[list[str]]:
    """The metadata chunks of PNG file ``data`` as ``[type, base64 payload]`` pairs, in file order,
    within ``MAX_BYTES``; [] for anything that is not a readable PNG."""
    try:
        chunks = png_chunks(data)
    except ArchiverError:
        return []
    out, used = [], 0
    for kind, payload, _ in chunks:
        if kind not in KEPT_CHUNKS or (kind == b"iTXt" and payload.startswith(_XMP_KEY)):
            continue
        if used + len(payload) > MAX_BYTES:
            continue
        used += len(payload)
        out.append([kind.decode("ascii"), base64.b64encode(payload).decode("ascii")])
    return out


def add_chunks(info: PngInfo, recorded, *, has_icc: bool = False) -> PngInfo:
    """``info`` with the recorded chunks added (``kept_chunks``'s output; anything malformed is
    skipped). An sRGB chunk is left out beside an ICC profile: a PNG has one or the other."""
    for item in recorded or ():
        try:
            kind, payload = item[0].encode("ascii"), base64.b64decode(item[1])
        except (TypeError, ValueError, IndexError, AttributeError):
            continue
        if kind not in KEPT_CHUNKS or (kind == b"sRGB" and has_icc):
            continue
        info.add(kind, payload)
    return info


#: XMP namespace of the note written into approximate restores
XMP_NS = "https://archiver.invalid/ns/1.0/"


def lossy_note(row) -> str:
    """The sentence a reconstruction carries, so that nobody mistakes it for the original."""
    return (f"Approximate reconstruction by archiver of {os.path.basename(row.path)} "
            f"(catalog id {row.id}, {row.codec or 'diffusion'} codec, original SHA-256 {row.sha256}); "
            "not the original pixels")


def mark_xmp(xmp: bytes | None, note: str) -> bytes:
    """An XMP packet with the note (dc:description and archiver:reconstruction); an existing
    packet is kept and the note added to it."""
    desc = (f'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            f'xmlns:archiver="{XMP_NS}" archiver:reconstruction="approximate">'
            f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(note)}</rdf:li></rdf:Alt></dc:description>'
            f"</rdf:Description>")
    text = (xmp or b"").decode("utf-8", "replace")
    if "</rdf:RDF>" in text:
        return text.replace("</rdf:RDF>", desc + "</rdf:RDF>", 1).encode()
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">' + desc +
            '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


def mark_exif(exif: bytes | None, note: str) -> bytes:
    """EXIF with the note in ImageDescription (kept from the original otherwise)."""
    e = Image.Exif()
    if exif:
        try:
            e.load(exif)
        except Exception:  # noqa: BLE001 - unreadable EXIF: start a fresh one rather than lose the note
            e = Image.Exif()
    e[0x010E] = note[:1000]
    return e.tobytes()


#: what an approximate restore is named after when its format cannot carry the mark (BMP, PPM, ...)
DEFAULT_LOSSY_SUFFIX = ".reconstructed"
_MARK_TEXT = "Approximate reconstruction by archiver"


def is_marked(data: bytes) -> bool:
    """Whether an image file carries archiver's reconstruction note where readers look: its XMP,
    its EXIF description, or a text chunk."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            xmp = im.info.get("xmp") or b""
            if isinstance(xmp, str):
                xmp = xmp.encode()
            if b'archiver:reconstruction="approximate"' in xmp:
                return True
            if str(im.getexif().get(0x010E, "")).startswith(_MARK_TEXT):
                return True
            texts = (v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in im.info.values())
            return any(isinstance(v, str) and v.startswith(_MARK_TEXT) for v in texts)
    except Exception:  # noqa: BLE001 - unreadable: certainly not marked
        return False


def marked_bytes(img, fmt: str, note: str, *, chunks=None, name: str = "image") -> bytes:
    """``img`` written as ``fmt`` (PNG when that format cannot hold it) with the metadata in its
    ``.info`` (EXIF, ICC profile, XMP) and ``note`` in its XMP, its EXIF description and, in a PNG,
    a Comment text chunk; a PNG also gets ``chunks`` (``kept_chunks``). Raises
    ``ArchiverError`` when the result does not read back at ``img``'s size."""
    out = io.BytesIO()
    kw = {k: v for k, v in img.info.items() if k in ("exif", "icc_profile", "xmp") and v}
    kw["exif"] = mark_exif(kw.get("exif"), note)
    kw["xmp"] = mark_xmp(kw.get("xmp"), note)
    if fmt in ("JPEG", "MPO"):
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        img.save(out, "JPEG", quality=95, **kw)
        return readable(name, img, out.getvalue())
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", kw.pop("xmp").decode())
    info.add_text("Comment", note)
    add_chunks(info, chunks, has_icc="icc_profile" in kw)
    try:
        extra = dict(kw, xmp=mark_xmp(None, note), **({"comment": note} if fmt == "GIF" else {}))
        img.save(out, fmt, **(extra if fmt != "PNG" else dict(kw, pnginfo=info)))
        return readable(name, img, out.getvalue())
    except (KeyError, OSError, ValueError, TypeError, ArchiverError):  # the format cannot hold it: PNG
        out = io.BytesIO()
        img.save(out, "PNG", pnginfo=info, **{k: v for k, v in kw.items() if k != "xmp"})
    return readable(name, img, out.getvalue())


def readable(name: str, img, data: bytes) -> bytes:
    """A reconstruction is written only if a reader opens it again at its size (CMYK or float
    TIFFs used to be written that no reader opened)."""
    try:
        with Image.open(io.BytesIO(data)) as back:
            back.load()
            if back.size == img.size:
                return data
    except Exception:  # noqa: BLE001 - any failure to read it back is the finding
        pass
    raise ArchiverError(f"{name}: the reconstruction does not read back as an image")


