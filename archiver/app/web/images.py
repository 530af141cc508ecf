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

from PIL import Image

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

    @property
    def codecs(self):
        """The codec registry for this installation (``codecs.bound.Codecs``), built on first use."""
        if self._codecs is None:
            self._codecs = self._codecs_factory() if self._codecs_factory is not None else Codecs()
        return self._codecs

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
        damaged = None
        if row.vault_path and row.sha256:
            try:
                return self._displayable(Vault.holding(row.vault_path).read_verified(row.sha256), "vault")
            except VaultDamaged as e:
                log.warning("vault copy damaged", extra={"id": row.id, "path": row.path, "error": str(e)})
                damaged = str(e)  # names the object and says "vault copy damaged"
            except VaultError:  # gone (retention ended meanwhile): the other sources
                pass
        p = Path(row.path)
        if row.original_status in ("kept", "present") and p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            if hashlib.sha256(data).hexdigest() == row.sha256:
                return self._noted(self._displayable(data, "original"), damaged)
        if row.restore_exact == "bytes" and row.compressed_path:  # an exact codec gives the very file back
            try:
                return self._noted(self._displayable(self._restored(row, self._compressed(row)), "lossless"), damaged)
            except NoPicture as e:
                if damaged:
                    raise VaultCopyDamaged(f"{damaged}; and the lossless file cannot give it back: {e}") from None
                raise
        if damaged:
            raise VaultCopyDamaged(f"{damaged}; no other copy of the original is kept")
        raise NoPicture("the original is no longer kept (vault retention ended or it was replaced)")

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
