"""Reading images safely and explicitly.

Everything that reads a user's image goes through ``load_image`` so that bombs, truncation,
EXIF orientation, odd modes (16-bit, palette, alpha, CMYK) and metadata are handled the same
way everywhere, and every conversion is written down in ``LoadedImage.notes`` rather than done
silently.
"""

from __future__ import annotations

import io
import os
import stat as statmod
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

try:  # registers JPEG XL with Pillow
    import pillow_jxl  # noqa: F401
except ImportError:  # pragma: no cover - optional at import time, required by the lossless action
    pass

try:  # registers HEIC/HEIF with Pillow (phone libraries); AVIF stays Pillow's own
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - a dependency; without it a HEIC is "not an image"
    pass

#: Default pixel limit (about 179 Mpx, Pillow's own default); larger images are refused as bombs.
DEFAULT_MAX_PIXELS = 178_956_970

#: HEIC/HEIF (pillow-heif): read, classified, kept unless a codec is smaller by the policy's margin
HEIF_SUFFIXES = (".heic", ".heif", ".hif")
#: camera raw files (LibRaw through rawpy): read only to classify and preview, always kept untouched
RAW_SUFFIXES = (".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf",
                ".pef", ".srw", ".rwl", ".3fr", ".erf", ".kdc", ".dcr", ".mrw", ".x3f", ".iiq", ".mos")
#: the file names archiver takes as images (discover, migrate, the daemon, ``archive DIR``)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".ppm", ".pgm", ".pnm",
                  *HEIF_SUFFIXES, *RAW_SUFFIXES)
#: the reason recorded for a camera raw file (the reports group on it)
RAW_REASON = "camera raw: kept untouched"
#: why: there is no codec here whose restore gives the raw file's bytes back while being smaller
#: (a lossless repack, e.g. DNG's own compression, would have to be proven exact per camera)
RAW_WHY = ("the sensor data and the maker's metadata stay as they are; it is read (LibRaw) only to "
           "classify it and draw a preview")


@dataclass
class ImageMetadata:
    """The original's metadata, carried through compression and restored on decode."""

    exif: bytes | None = None
    icc_profile: bytes | None = None
    xmp: bytes | None = None

    def pil_save_kwargs(self) -> dict:
        kw = {}
        if self.exif:
            kw["exif"] = self.exif
        if self.icc_profile:
            kw["icc_profile"] = self.icc_profile
        if self.xmp:
            kw["xmp"] = self.xmp
        return kw


@dataclass
class LoadedImage:
    """An image ready for coding: 8-bit RGB pixels (orientation applied), plus what it was."""

    rgb: Image.Image
    alpha: Image.Image | None
    original_mode: str
    original_format: str | None
    width: int
    height: int
    grayscale: bool
    bit_depth: int
    metadata: ImageMetadata
    notes: list[str] = field(default_factory=list)
    #: frames in the file (animations, multi-page TIFF); ``rgb`` is only the first
    frames: int = 1
    #: bits per sample as stored in the file (Pillow reads 16-bit colour PNG/TIFF as 8 bits)
    stored_bit_depth: int = 8
    #: a camera raw file's kind ("DNG", "CR2", ...): ``rgb`` is LibRaw's development of it, for
    #: classification and previews only; None for every other image
    camera_raw: str | None = None

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    def unfaithful(self) -> list[str]:
        """Why ``rgb`` (+ ``alpha``) is not the whole image: what a coder working from them would
        silently drop. Empty when the 8-bit RGB(A) pixels are everything the file holds."""
        out = []
        if self.frames > 1:
            out.append(f"{self.frames} frames (only one would be kept)")
        if self.stored_bit_depth > 8:
            out.append(f"{self.stored_bit_depth}-bit samples (8 would be kept)")
        if self.original_mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            out.append(f"{self.original_mode} colour model (converted to RGB)")
        if self.original_mode in ("F", "I"):
            out.append(f"{'floating-point' if self.original_mode == 'F' else '32-bit integer'} pixels")
        if self.camera_raw:
            out.append(f"camera raw ({self.camera_raw}): the pixels are one development of its sensor data")
        return out


def _metadata(img: Image.Image) -> ImageMetadata:
    info = img.info
    exif = info.get("exif")
    if exif is None:
        try:
            e = img.getexif()
            exif = e.tobytes() if len(e) else None
        except Exception:
            exif = None
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    return ImageMetadata(exif=exif or None, icc_profile=info.get("icc_profile") or None, xmp=xmp or None)


def _strip_orientation(exif: bytes | None) -> bytes | None:
    """After rotating the pixels, the EXIF orientation tag must say 'normal'."""
    if not exif:
        return exif
    try:
        e = Image.Exif()
        e.load(exif)
        if e.get(0x0112, 1) != 1:
            e[0x0112] = 1
            return e.tobytes()
    except Exception:
        return exif
    return exif


def _cmyk_to_rgb(img: Image.Image, meta: ImageMetadata, notes: list[str]) -> Image.Image:
    """CMYK -> sRGB through the image's own ICC profile when it has one. That CMYK profile must
    not travel on with RGB pixels (viewers would misread them), so it is dropped."""
    if meta.icc_profile:
        try:
            from PIL import ImageCms  # heavy: PIL.ImageCms, only for images with an ICC profile, not loaded by archiver --help

            src = ImageCms.ImageCmsProfile(io.BytesIO(meta.icc_profile))
            rgb = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            notes.append("CMYK converted to sRGB with its ICC profile (the CMYK profile is not kept)")
            meta.icc_profile = None
            return rgb
        except Exception:
            meta.icc_profile = None
            notes.append("CMYK converted to RGB; its ICC profile could not be applied and is not kept")
            return img.convert("RGB")
    notes.append("CMYK converted to RGB")
    return img.convert("RGB")


def read_regular_file(path: str | Path) -> bytes:
    """A file's bytes, refusing anything but a regular file *before* reading: a FIFO named
    ``*.jpg`` would block forever, a device would never end. ``InputError`` with the reason."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, not an image") from None
    except OSError as e:
        raise InputError(f"{name}: cannot open ({e.strerror})") from None
    st = os.fstat(fd)
    if not statmod.S_ISREG(st.st_mode):
        os.close(fd)
        if statmod.S_ISDIR(st.st_mode):
            raise InputError(f"{name}: is a directory, not an image")
        raise InputError(f"{name}: not a regular file (FIFOs, devices and sockets are never read)")
    with os.fdopen(fd, "rb") as f:
        return f.read()


def stored_bit_depth(img: Image.Image, data: bytes | None = None) -> int:
    """Bits per sample as the file stores them (not as Pillow hands them over)."""
    if data is not None and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) > 24:
        return int(data[24])
    if img.format == "HEIF" and img.info.get("bit_depth"):  # pillow-heif hands 10/12-bit HEIC over as 8 bits
        return int(img.info["bit_depth"])
    bits = getattr(img, "tag_v2", {}).get(258) if img.format == "TIFF" else None
    if bits:
        try:
            return max(int(b) for b in (bits if isinstance(bits, (tuple, list)) else (bits,)))
        except (TypeError, ValueError):
            pass
    return {"I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32, "1": 1}.get(img.mode, 8)


def _tiff_tags(data: bytes, wanted: set[int]) -> dict[int, bytes]:
    """The raw value fields of ``wanted`` tags in a TIFF's first IFD (empty when not a TIFF)."""
    order = {b"II": "<", b"MM": ">"}.get(bytes(data[:2]))
    if order is None or len(data) < 8:
        return {}
    try:
        (magic, ifd) = struct.unpack(order + "HI", data[2:8])
        if magic != 42:
            return {}
        (n,) = struct.unpack(order + "H", data[ifd:ifd + 2])
        out = {}
        for i in range(min(n, 512)):
            e = data[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
            tag = struct.unpack(order + "H", e[:2])[0]
            if tag in wanted:
                out[tag] = e[8:12]
        return out
    except (struct.error, IndexError):
        return {}


def camera_raw_kind(data: bytes, name: str | None = None) -> str | None:
    """The camera raw kind of a file ("DNG", "CR2", "NEF", ...), by its name's suffix or by its
    first bytes (a DNG tag, Canon/Fuji/Olympus/Panasonic signatures); None for other files.
    Pillow opens several raw formats as TIFF and would read only their small preview."""
    suffix = os.path.splitext(name or "")[1].lower()
    if suffix in RAW_SUFFIXES:
        return suffix[1:].upper()
    head = bytes(data[:16])
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        if head[8:10] == b"CR":
            return "CR2"
        if _tiff_tags(data, {50706}):  # DNGVersion
            return "DNG"
    if head[4:12] == b"ftypcrx ":
        return "CR3"
    if head.startswith(b"FUJIFILMCCD-RAW"):
        return "RAF"
    if head[:4] in (b"IIRO", b"IIRS", b"MMOR"):
        return "ORF"
    if head[:4] == b"IIU\x00":
        return "RW2"
    return None


def _load_raw(data: bytes, kind: str, name: str, max_pixels: int) -> LoadedImage:
    """A camera raw file developed by LibRaw (half size, camera white balance, 8 bits) for the
    classifiers and previews; ``InputError`` with LibRaw's reason when it cannot read it."""
    try:
        import rawpy  # heavy: rawpy (LibRaw), only for camera raw files
    except ImportError:
        raise InputError(f"{name}: camera raw that needs rawpy to be read ({kind}: pip install rawpy); kept untouched") from None
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            w, h = raw.sizes.raw_width, raw.sizes.raw_height
            if w * h > max_pixels:
                raise InputError(f"{name}: refused as a decompression bomb ({w}x{h} sensor pixels)")
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
    except InputError:
        raise
    except Exception as e:  # LibRawError and its kinds, or a broken file LibRaw trips on
        raise InputError(f"{name}: camera raw that LibRaw cannot read ({kind}: {type(e).__name__}: {e}); "
                         "kept untouched") from None
    img = Image.fromarray(rgb, "RGB")
    return LoadedImage(rgb=img, alpha=None, original_mode="RGB", original_format=kind, width=img.width,
                       height=img.height, grayscale=False, bit_depth=16, metadata=ImageMetadata(),
                       notes=[f"camera raw ({kind}) developed by LibRaw at half size ({w}x{h} sensor) "
                              "to classify and preview it; the file itself is kept untouched"],
                       stored_bit_depth=16, camera_raw=kind)


def load_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, *,
               name: str | None = None) -> LoadedImage:
    """Open, fully decode and normalise an image, or raise ``InputError`` with a clear reason.
    ``name``: the file's name when ``source`` is its bytes (a camera raw is known by it)."""
    if not isinstance(source, (bytes, bytearray)):
        name = name or str(source)
        source = read_regular_file(source)
    raw_kind = camera_raw_kind(source, name)
    name = "<bytes>" if name is None else name
    if raw_kind:
        return _load_raw(bytes(source), raw_kind, name, max_pixels)
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with io.BytesIO(source) as fp:
                try:
                    img = Image.open(fp)
                    fmt = img.format
                    n_frames = getattr(img, "n_frames", 1)  # needs the open file
                    img.load()
                    depth = stored_bit_depth(img, bytes(source[:32]))
                except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                    raise InputError(f"{name}: refused as a decompression bomb ({e})") from None
                except UnidentifiedImageError:
                    raise InputError(f"{name}: not an image (format not recognised)") from None
                except (OSError, SyntaxError, ValueError, EOFError) as e:
                    raise InputError(f"{name}: corrupt or truncated image ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit

    meta = _metadata(img)
    notes: list[str] = []
    if n_frames > 1:
        notes.append(f"multi-frame image: only the first of {n_frames} frames is used")
    if depth > 8 and img.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        notes.append(f"{depth}-bit samples read as 8 bits")
    original_mode = img.mode
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    if orientation not in (None, 1):
        img = ImageOps.exif_transpose(img)
        notes.append(f"EXIF orientation {orientation} applied to the pixels")
        meta.exif = _strip_orientation(meta.exif)

    bit_depth = 16 if original_mode in ("I;16", "I;16B", "I;16L", "I", "F") else 8
    grayscale = original_mode in ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F")
    alpha = None
    if original_mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np  # heavy: numpy, which imageio does not load at import

        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if original_mode != "F" else max(1.0, float(a.max()))
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype("uint8")
        img = Image.fromarray(a, "L")
        notes.append(f"{original_mode} ({bit_depth}-bit) reduced to 8 bits for coding")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        notes.append("palette expanded to RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = img.getchannel("A")
        if alpha.getextrema() == (255, 255):
            alpha = None
            notes.append("fully opaque alpha channel dropped")
        else:
            notes.append("alpha channel kept losslessly beside the coded RGB")
    if img.mode == "CMYK":
        img = _cmyk_to_rgb(img, meta, notes)
    rgb = img.convert("RGB")
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        original_mode=original_mode,
        original_format=fmt,
        width=rgb.width,
        height=rgb.height,
        grayscale=grayscale,
        bit_depth=bit_depth,
        metadata=meta,
        notes=notes,
        frames=n_frames,
        stored_bit_depth=max(depth, 16 if bit_depth == 16 else 8),
    )
