"""The ``.dlc`` container, versions 1 and 2 (byte layout in docs/codec.md).

    magic(8) | version(1) | header_len(u32) | header | sections... | SHA-256(32)

The checksum covers every byte before it and is verified right after the magic and version,
before any field is trusted, so a truncated or altered file is refused before decoding starts.

Version 2 adds a quantization mode (whether mu and delta are in the header or the backbone's)
and a list of optional fields (tag, length, bytes) after the ROI boxes; the one field so far
names the adapter the file was coded with. A file that needs neither is written as version 1,
byte for byte what earlier releases wrote, so older readers still read it.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Optional

from ...errors import ContainerError

MAGIC = b"\x89DLC\r\n\x1a\n"
#: the newest version this module writes; a file without optional fields is still version 1
VERSION = 2
VERSIONS = (1, 2)
DIGEST_LEN = 32
SUFFIX = ".dlc"

#: section tags
LATENT, ALPHA, EXIF, ICC, XMP = b"Q", b"A", b"E", b"I", b"X"
SECTION_NAMES = {LATENT: "latent", ALPHA: "alpha", EXIF: "exif", ICC: "icc", XMP: "xmp"}

#: optional header fields (version 2). An unknown tag is refused, not skipped: a field a newer
#: archiver wrote may change how the latent decodes
FIELD_ADAPTER = 1  # SHA-256 of the adapter the file was coded with (codec/adapter.py)

#: quantization modes (version 2): 0 = mu and delta per channel in the header (as version 1);
#: 1 = none stored: mu = 0 and delta = the backbone's trained steps (pinned by its digest)
QMODE_HEADER, QMODE_BACKBONE = 0, 1
QMODES = (QMODE_HEADER, QMODE_BACKBONE)


@dataclass
class Header:
    backbone_id: str
    weights_sha256: str  # hex
    width: int
    height: int
    mode: str  # the original's PIL mode, restored on decode where sensible
    stride: int
    latent_channels: int
    latent_height: int
    latent_width: int
    entropy_kind: int  # 0 generic per-channel Gaussian, 1 trained scale hyperprior, 2 trained checkerboard
    t: int  # diffusion timestep the decoder starts from (0 = no diffusion)
    steps: int  # DDIM steps suggested by the encoder
    s: float  # global quality factor
    mu: list[float]
    delta: list[float]
    roi_factor: float = 1.0
    roi: list[tuple[int, int, int, int]] = field(default_factory=list)
    #: SHA-256 (hex) of the adapter (trained entropy model and steps) the file was coded with
    adapter_sha256: Optional[str] = None
    #: where mu and delta come from (QMODE_*); with QMODE_BACKBONE, mu and delta are empty lists
    qmode: int = QMODE_HEADER
    version: int = 1
    #: section tag -> size in bytes (filled by read_header)
    section_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def pixels(self) -> int:
        return self.width * self.height


class _Reader:
    def __init__(self, data: bytes, pos: int, end: int):
        self.data, self.pos, self.end = data, pos, end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise ContainerError("damaged .dlc file: a field runs past its end")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))

    def short_str(self) -> str:
        (n,) = self.unpack("B")
        try:
            return self.take(n).decode("ascii")
        except UnicodeDecodeError:
            raise ContainerError("damaged .dlc file: non-ASCII name") from None


def _short_str(s: str) -> bytes:
    b = s.encode("ascii")
    if len(b) > 255:
        raise ValueError(f"name too long: {s!r}")
    return struct.pack("<B", len(b)) + b


def _pack_header(h: Header) -> bytes:
    c = h.latent_channels
    if h.qmode not in QMODES:
        raise ValueError(f"unknown quantization mode {h.qmode}")
    n_params = c if h.qmode == QMODE_HEADER else 0
    if len(h.mu) != n_params or len(h.delta) != n_params:
        raise ValueError(f"mu/delta must have {n_params} values (quantization mode {h.qmode})")
    v2 = format_version(h) == 2
    out = bytearray()
    out += _short_str(h.backbone_id)
    out += bytes.fromhex(h.weights_sha256)
    out += struct.pack("<II", h.width, h.height)
    out += _short_str(h.mode)
    out += struct.pack("<BBHHB", h.stride, c, h.latent_height, h.latent_width, h.entropy_kind)
    out += struct.pack("<HBf", h.t, h.steps, h.s)
    if v2:
        out += struct.pack("<B", h.qmode)
    out += struct.pack(f"<{n_params}f{n_params}f", *h.mu, *h.delta)
    out += struct.pack("<fB", h.roi_factor, len(h.roi))
    for box in h.roi:
        out += struct.pack("<4H", *box)
    if v2:
        optional = _optional_fields(h)
        out += struct.pack("<B", len(optional))
        for tag, payload in optional:
            out += struct.pack("<BH", tag, len(payload)) + payload
    return bytes(out)


def _optional_fields(h: Header) -> list[tuple[int, bytes]]:
    fields_ = []
    if h.adapter_sha256 is not None:
        digest = bytes.fromhex(h.adapter_sha256)
        if len(digest) != DIGEST_LEN:
            raise ValueError("adapter digest must be a SHA-256")
        fields_.append((FIELD_ADAPTER, digest))
    return fields_


def format_version(h: Header) -> int:
    """The version a header is written as: 2 only when it needs what version 1 cannot say (a
    quantization mode other than 0, or an optional field), so other files stay byte-identical v1."""
    return 2 if h.qmode != QMODE_HEADER or _optional_fields(h) else 1


def pack(h: Header, sections: dict[bytes, bytes]) -> bytes:
    """Serialise a header and its sections (empty sections are left out) into a .dlc file."""
    header = _pack_header(h)
    out = bytearray(MAGIC)
    out += struct.pack("<BI", format_version(h), len(header))
    out += header
    for tag in (LATENT, ALPHA, EXIF, ICC, XMP):
        payload = sections.get(tag)
        if payload:
            out += tag + struct.pack("<I", len(payload)) + payload
    out += hashlib.sha256(out).digest()
    return bytes(out)


def _verify(data: bytes) -> int:
    """Check magic, version and checksum; return the end of the checksummed body."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ContainerError("not a .dlc file (no bytes)")
    data = bytes(data)
    if len(data) < len(MAGIC) + 1 or data[: len(MAGIC)] != MAGIC:
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            raise ContainerError("truncated .dlc file")
        raise ContainerError("not a .dlc file (bad magic)")
    version = data[len(MAGIC)]
    if version not in VERSIONS:
        raise ContainerError(f"unknown .dlc format version {version} (this archiver reads versions "
                             f"{', '.join(map(str, VERSIONS))})")
    end = len(data) - DIGEST_LEN
    if end < len(MAGIC) + 5 or hashlib.sha256(data[:end]).digest() != data[end:]:
        raise ContainerError("checksum mismatch: the .dlc file is truncated or altered")
    return end


def unpack(data: bytes) -> tuple[Header, dict[bytes, bytes]]:
    """Verify and parse a .dlc file; raise ``ContainerError`` on any damage."""
    data = bytes(data)
    end = _verify(data)
    r = _Reader(data, len(MAGIC) + 1, end)
    (hlen,) = r.unpack("I")
    hr = _Reader(data, r.pos, r.pos + hlen)
    r.take(hlen)
    if hr.end > end:
        raise ContainerError("damaged .dlc file: header runs past the end")
    backbone_id = hr.short_str()
    digest = hr.take(32).hex()
    width, height = hr.unpack("II")
    mode = hr.short_str()
    stride, c, lh, lw, kind = hr.unpack("BBHHB")
    t, steps, s = hr.unpack("HBf")
    version = data[len(MAGIC)]
    qmode = hr.unpack("B")[0] if version >= 2 else QMODE_HEADER
    if qmode not in QMODES:
        raise ContainerError(f"unknown quantization mode {qmode} (written by a newer archiver?)")
    n_params = c if qmode == QMODE_HEADER else 0
    vals = hr.unpack(f"{n_params}f{n_params}f")
    roi_factor, nroi = hr.unpack("fB")
    roi = [tuple(hr.unpack("4H")) for _ in range(nroi)]
    adapter = None
    if version >= 2:
        (nfields,) = hr.unpack("B")
        seen = set()
        for _ in range(nfields):
            tag, n = hr.unpack("BH")
            payload = hr.take(n)
            if tag in seen:
                raise ContainerError(f"damaged .dlc file: header field {tag} repeated")
            seen.add(tag)
            if tag == FIELD_ADAPTER and n == DIGEST_LEN:
                adapter = payload.hex()
            else:
                raise ContainerError(f"unknown .dlc header field {tag} (written by a newer archiver?)")
    if hr.pos != hr.end:
        raise ContainerError("damaged .dlc file: header length does not match its fields")
    if width < 1 or height < 1 or stride < 1 or c < 1:
        raise ContainerError("damaged .dlc file: impossible image geometry")
    if lh != -(-height // stride) or lw != -(-width // stride):
        raise ContainerError("damaged .dlc file: latent size does not match the image size")
    sections: dict[bytes, bytes] = {}
    while r.pos < end:
        tag = r.take(1)
        (n,) = r.unpack("I")
        if tag in sections:
            raise ContainerError(f"damaged .dlc file: section {tag!r} repeated")
        sections[tag] = r.take(n)
    if LATENT not in sections:
        raise ContainerError("damaged .dlc file: no latent section")
    header = Header(
        backbone_id=backbone_id, weights_sha256=digest, width=width, height=height, mode=mode,
        stride=stride, latent_channels=c, latent_height=lh, latent_width=lw, entropy_kind=kind,
        t=t, steps=steps, s=s, mu=list(vals[:n_params]), delta=list(vals[n_params:]), roi_factor=roi_factor,
        roi=roi, adapter_sha256=adapter, qmode=qmode, version=version,
        section_sizes={SECTION_NAMES.get(k, k.hex()): len(v) for k, v in sections.items()},
    )
    return header, sections


def read_header(data: bytes) -> Header:
    """The verified header of a .dlc file (checksum included); ``ContainerError`` on any damage."""
    return unpack(data)[0]
