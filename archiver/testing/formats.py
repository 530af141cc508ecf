"""Small files of the formats phones and cameras write, made here: a HEIC (pillow-heif) and a
minimal valid DNG (a 16-bit RGGB Bayer mosaic, uncompressed, that LibRaw develops)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from .catalog import photo_bytes

_BYTE, _ASCII, _SHORT, _LONG, _SRATIONAL = 1, 2, 3, 4, 10
_FMT = {_BYTE: "B", _SHORT: "H", _LONG: "I", _SRATIONAL: "i"}


def dng_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """A DNG 1.4 file: one IFD with a CFA image (RGGB, 16 bits), an identity colour matrix."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    data = (xx * 900 + yy * 500 + rng.integers(0, 200, (height, width))).astype("<u2").tobytes()
    model = b"archiver test camera\x00"
    matrix = [v for i in range(3) for j in range(3) for v in (int(i == j), 1)]
    tags = [(254, _LONG, [0]), (256, _LONG, [width]), (257, _LONG, [height]), (258, _SHORT, [16]),
            (259, _SHORT, [1]), (262, _SHORT, [32803]), (271, _ASCII, b"Archiver\x00"), (272, _ASCII, model),
            (273, _LONG, [0]), (274, _SHORT, [1]), (277, _SHORT, [1]), (278, _LONG, [height]),
            (279, _LONG, [len(data)]), (284, _SHORT, [1]), (33421, _SHORT, [2, 2]), (33422, _BYTE, [0, 1, 1, 2]),
            (50706, _BYTE, [1, 4, 0, 0]), (50708, _ASCII, model), (50717, _LONG, [65535]),
            (50721, _SRATIONAL, matrix), (50778, _SHORT, [21])]
    values = []
    for tag, typ, v in tags:
        raw = v if typ == _ASCII else struct.pack("<" + _FMT[typ] * len(v), *v)
        values.append((tag, typ, len(v) // 2 if typ == _SRATIONAL else len(v), raw))
    extra_at = 8 + 2 + 12 * len(values) + 4

    def ifd(strip_at: int) -> tuple[bytes, bytes]:
        entries, extra = b"", b""
        for tag, typ, count, raw in values:
            if tag == 273:
                raw = struct.pack("<I", strip_at)
            if len(raw) <= 4:
                entries += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0")
            else:
                entries += struct.pack("<HHII", tag, typ, count, extra_at + len(extra))
                extra += raw + b"\0" * (len(raw) % 2)
        return entries, extra

    _, extra = ifd(0)
    entries, extra = ifd(extra_at + len(extra))
    return b"II*\x00" + struct.pack("<IH", 8, len(values)) + entries + b"\0\0\0\0" + extra + data


def write_dng(path: str | Path, **kw) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dng_bytes(**kw))
    return path


def heic_bytes(seed: int = 0, size=(192, 160), quality: int = 90) -> bytes:
    """A photo-like HEIC (pillow-heif's encoder) with an EXIF Make tag."""
    import pillow_heif  # heavy: pillow-heif, which testing.catalog does not need

    pillow_heif.register_heif_opener()
    img = Image.open(io.BytesIO(photo_bytes(seed, size)))
    exif = Image.Exif()
    exif[0x010F] = "ArchiverTestPhone"
    out = io.BytesIO()
    img.save(out, "HEIF", quality=quality, exif=exif.tobytes())
    return out.getvalue()


def write_heic(path: str | Path, **kw) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(heic_bytes(**kw))
    return path
