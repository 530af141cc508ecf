"""The two pictures of a file page: the original (while one is kept) and what the archive gives
back (the decoded reconstruction, or the lossless file's exact original).

Images are found only through a catalog row, never through a path from the request, so the web
can show nothing the catalog does not name. Formats a browser cannot show (TIFF, BMP, PNM) and
decoded reconstructions are converted to PNG once and cached under ``cache_dir``, named by the
content's SHA-256 so a changed file never shows a stale picture; the cache is capped, least
recently used out first (``archiver.web.cache``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from ...codecs import Exactness, Recorded
from ...codecs.bound import Codecs
from ...errors import ArchiverError
from .cache import DEFAULT_MAX_BYTES, PictureCache
from ...storage.vault import Vault, VaultDamaged, VaultError

log = logging.getLogger("archiver.web")

#: what browsers show as they are (Chromium shows AVIF too, but not every browser does)
BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
#: diffusion decodes are CPU- and memory-heavy: one at a time, whatever the server's thread count
_DECODE_LOCK = threading.Lock()
#: the grid's thumbnails: long side in pixels, and their suffix in the picture cache
THUMB_PX = 256
THUMB_SUFFIX = ".jpg"


@dataclass
class Picture:
    data: bytes
    mimetype: str
    source: str  # vault | original | lossless | reconstruction
    #: said beside the picture (a header, ASCII): why it does not come from the best source
    note: str | None = None


class NoPicture(ArchiverError):
    """There is nothing to show for this side of the file page (said in words on the page)."""

    exit_code = 1
    #: the HTTP status the API answers with
    status = 404


class VaultCopyDamaged(NoPicture):
    """The vault's copy is not the original, and nothing else gives the original back."""

    status = 409


def _sniff(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format
    except Exception:
        return None


def _open(data: bytes, size: int) -> Image.Image:
    """``data`` as an image; a JPEG is decoded at the smallest scale still at least ``size``."""
    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG":
        img.draft("RGB", (size, size))
    return img


def _as_thumb(img: Image.Image, size: int) -> bytes:
    """A JPEG whose long side is at most ``size``, the right way up (EXIF orientation)."""
    img = ImageOps.exif_transpose(img)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    if img.mode != "RGB":
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=80)
    return out.getvalue()


def _preview_bytes(row) -> bytes | None:
    """The preview archiver wrote beside the file, if it is still what it wrote (its SHA-256)."""
    if not (row.preview_path and row.preview_sha256):
        return None
    p = Path(row.preview_path)
    try:
        if p.is_symlink() or not p.is_file():
            return None
        data = p.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == row.preview_sha256 else None


def _as_png(img: Image.Image) -> bytes:
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=1)  # fast: this is a cache, not an archive
    return out.getvalue()


class Pictures:
    def __init__(self, cache_dir: str | Path, vault=None, codecs_factory=None, cache_max_bytes: int = DEFAULT_MAX_BYTES):
        self.cache_dir = Path(cache_dir)
        self.cache = PictureCache(self.cache_dir, cache_max_bytes)
        self.vault = vault
        self._codecs_factory = codecs_factory
        self._codecs = None
        #: the decoder: cold (loads on the first decoded picture), warming, ready (``warm``)
        self.decoder = "cold"

    @property
    def codecs(self):
        """The codec registry for this installation (``codecs.bound.Codecs``), built on first use."""
        if self._codecs is None:
            self._codecs = self._codecs_factory() if self._codecs_factory is not None else Codecs()
        return self._codecs

    def start_warm(self, names) -> threading.Thread:
        """``warm(names)`` on a daemon thread (the state says "warming" from now on)."""
        self.decoder = "warming"
        t = threading.Thread(target=self.warm, args=(names,), name="archiver-web-warm", daemon=True)
        t.start()
        return t

    def warm(self, names) -> None:
        """Load the decoders of the codecs ``names()`` gives (``Codec.warm``: torch and the
        backbone for diffusion), holding the decode lock, so that a decode asked for meanwhile
        waits for this load instead of doing it a second time. A codec that cannot be loaded is
        logged; its pictures then say why, as before."""
        self.decoder = "warming"
        try:
            with _DECODE_LOCK:
                for name in names():
                    try:
                        self.codecs.get(name).warm()
                    except Exception as e:  # noqa: BLE001 - a warm-up never stops the server
                        log.warning("decoder not loaded at start", extra={"codec": name, "error": str(e)})
        finally:
            self.decoder = "ready"

    # -- cache --------------------------------------------------------------------------------
    def _cached(self, key: str, make) -> bytes:
        """The cached PNG for ``key``, else ``make()`` (kept in the capped cache when it can be)."""
        data = self.cache.get(key)
        if data is None:
            data = make()
            self.cache.put(key, data)
        return data

    def _displayable(self, data: bytes, source: str) -> Picture:
        fmt = _sniff(data)
        if fmt in BROWSER_FORMATS:
            return Picture(data, BROWSER_FORMATS[fmt], source)
        if fmt is None:
            raise NoPicture(f"the {source} copy is not a readable image")
        key = hashlib.sha256(data).hexdigest()
        return Picture(self._cached(key, lambda: _as_png(Image.open(io.BytesIO(data)))), "image/png", source)

    # -- the two sides ------------------------------------------------------------------------
    def original(self, row) -> Picture:
        """The original bytes: from the vault while kept there (``Vault.read_verified``: never
        bytes that are not the original), else the file if it is still on disk unchanged, else
        rebuilt exactly from a lossless file. A damaged vault copy is logged and said in the
        picture's note; with no other source it is ``VaultCopyDamaged`` (409)."""
        data, source, damaged = self._original_bytes(row)
        return self._noted(self._displayable(data, source), damaged)

    def _original_bytes(self, row) -> tuple[bytes, str, str | None]:
        """(the original's bytes, where they came from, why the vault copy was not used or None)."""
        damaged = None
        if row.vault_path and row.sha256:
            try:
                return Vault.holding(row.vault_path).read_verified(row.sha256), "vault", None
            except VaultDamaged as e:
                log.warning("vault copy damaged", extra={"id": row.id, "path": row.path, "error": str(e)})
                damaged = str(e)  # names the object and says "vault copy damaged"
            except VaultError:  # gone (retention ended meanwhile): the other sources
                pass
        p = Path(row.path)
        if row.original_status in ("kept", "present") and p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            if hashlib.sha256(data).hexdigest() == row.sha256:
                return data, "original", damaged
        if row.restore_exact == "bytes" and row.compressed_path:  # an exact codec gives the very file back
            try:
                return self._restored(row, self._compressed(row)), "lossless", damaged
            except NoPicture as e:
                if damaged:
                    raise VaultCopyDamaged(f"{damaged}; and the lossless file cannot give it back: {e}") from None
                raise
        if damaged:
            raise VaultCopyDamaged(f"{damaged}; no other copy of the original is kept")
        raise NoPicture("the original is no longer kept (vault retention ended or it was replaced)")

    # -- thumbnails for the grid ----------------------------------------------------------------
    def thumbnail(self, row, size: int = THUMB_PX) -> Picture:
        """A small JPEG (long side ``size``) of the file, from the cheapest true source: the
        preview archiver wrote beside it, else the original (vault, or on disk; JPEGs decoded at a
        reduced scale), else what the archive gives back (a conventional file read by Pillow, an
        exact restore, or the decoded reconstruction). Cached in the picture cache by the
        version's content (its SHA-256s), so a second visit reads one small file."""
        key = hashlib.sha256(f"thumb:{size}:{row.sha256}:{row.compressed_sha256}".encode()).hexdigest()
        data = self.cache.get(key, THUMB_SUFFIX)
        if data is not None:
            return Picture(data, "image/jpeg", "cache")
        source = "file"
        try:
            img, source = self._thumb_source(row, size)
            data = _as_thumb(img, size)
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # not an image Pillow reads whole
            raise NoPicture(f"no thumbnail: the {source} copy is not a readable image ({type(e).__name__})") from None
        self.cache.put(key, data, THUMB_SUFFIX)
        return Picture(data, "image/jpeg", source)

    def _thumb_source(self, row, size: int) -> tuple[Image.Image, str]:
        preview = _preview_bytes(row)
        if preview is not None:
            return _open(preview, size), "preview"
        try:
            data, source, _ = self._original_bytes(row)
            return _open(data, size), source
        except NoPicture:
            if not row.compressed_path:
                raise
        blob = self._compressed(row)
        if self._codec(row).exactness is not Exactness.APPROX:
            return _open(self._restored(row, blob), size), "lossless"
        if _sniff(blob) is not None:  # AVIF, JPEG XL: what Pillow reads is what a restore gives
            return _open(blob, size), "reconstruction"
        return _open(self.decoded(row).data, size), "reconstruction"

    @staticmethod
    def _noted(pic: Picture, damaged: str | None) -> Picture:
        if damaged:  # plain ASCII (it goes into a header); the details are in the log
            pic.note = f"vault copy damaged (see the server log); shown from the {pic.source} copy"
        return pic

    def decoded(self, row) -> Picture:
        """What a restore without the original gives back."""
        if not row.compressed_path:
            raise NoPicture("no compressed file: the policy kept this file as it is")
        blob = self._compressed(row)
        codec = self._codec(row)
        if codec.exactness is not Exactness.APPROX:
            return self._displayable(self._restored(row, blob), "lossless")
        key = row.compressed_sha256 or hashlib.sha256(blob).hexdigest()

        def decode() -> bytes:
            with _DECODE_LOCK:
                return _as_png(codec.decode(blob))

        return Picture(self._cached(key, decode), "image/png", "reconstruction")

    def _codec(self, row):
        try:
            return self.codecs.for_row(row)
        except ArchiverError as e:
            raise NoPicture(str(e)) from None

    def _restored(self, row, blob: bytes) -> bytes:
        """What the row's (exact) codec gives back, checked against the catalog."""
        return self._codec(row).restore(blob, Recorded.from_row(row)).data

    def _compressed(self, row) -> bytes:
        from ...work.restore import read_compressed  # heavy: sqlalchemy (via work.restore), which app.web.images does not load at import

        try:
            return read_compressed(row)
        except ArchiverError as e:
            raise NoPicture(str(e)) from None
