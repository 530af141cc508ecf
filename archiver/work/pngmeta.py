"""A PNG original's own metadata chunks (text, gamma, colour, resolution, time), kept in the
catalog when a lossy codec stores it, and written back into its reconstructions: the lossy
formats carry EXIF, ICC and XMP, but no PNG text chunks.

The chunks are recorded as they were (type and payload, base64) in the row's ``codec_params``
under ``PARAM``; EXIF, ICC and XMP travel in the artifact itself and are not repeated here.
"""

from __future__ import annotations

import base64

from PIL.PngImagePlugin import PngInfo

from ..codecs.lossless.format import png_chunks
from ..errors import ArchiverError

#: where a row's ``codec_params`` keeps them
PARAM = "png_chunks"
#: the ancillary chunks that describe the image and do not depend on its pixel encoding
KEPT = (b"tEXt", b"zTXt", b"iTXt", b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"tIME")
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
        if kind not in KEPT or (kind == b"iTXt" and payload.startswith(_XMP_KEY)):
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
        if kind not in KEPT or (kind == b"sRGB" and has_icc):
            continue
        info.add(kind, payload)
    return info
