"""The file being decided on, with everything about it computed lazily and at most once.

Path, tags and file size cost nothing; format, dimensions and EXIF need only the image header;
pixels (and downscaled working copies for the detectors) are decoded only when a pixel
classifier actually runs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image
from PIL import Image

from ..errors import InputError
from ..imageio import LoadedImage, load_image


class Subject:
    def __init__(self, path: str | Path | None, image: LoadedImage | None = None, tags=()):
        self.path = Path(path) if path is not None else None
        self.tags = frozenset(str(t).strip().lower() for t in (tags or ()))
        self._image = image
        self._header: dict[str, Any] | None = None
        self._stat: os.stat_result | None = None
        self._work: dict[int, tuple[Any, float]] = {}

    # -- cheap facts -------------------------------------------------------------------------
    @property
    def posix_path(self) -> str:
        if self.path is None:
            return ""
        return self.path.absolute().as_posix()

    @property
    def stat(self) -> os.stat_result | None:
        if self._stat is None and self.path is not None:
            try:
                self._stat = self.path.stat()
            except OSError:
                self._stat = None
        return self._stat

    @property
    def size(self) -> int | None:
        st = self.stat
        return st.st_size if st else None

    @property
    def header(self) -> dict[str, Any]:
        """Format, size and EXIF from the header only (no pixel decoding)."""
        if self._header is None:
            self._header = self._read_header()
        return self._header

    def _read_header(self) -> dict[str, Any]:
        h: dict[str, Any] = {"format": None, "width": None, "height": None, "exif": {}}
        exif = None
        if self._image is not None:
            h.update(format=self._image.original_format, width=self._image.width, height=self._image.height)
            if self._image.metadata.exif:
                try:
                    exif = Image.Exif()
                    exif.load(self._image.metadata.exif)
                except Exception:
                    exif = None
        elif self.path is not None and _regular(self.path):  # a FIFO would block the open forever
            try:
                with Image.open(self.path) as im:
                    h.update(format=im.format, width=im.width, height=im.height)
                    exif = im.getexif()
            except Exception:
                pass  # unreadable: pixel classifiers will report it through load_image
        if exif:
            tags: dict[str, Any] = {}
            blocks = [dict(exif)]
            for ifd in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
                try:
                    blocks.append(dict(exif.get_ifd(ifd)))
                except Exception:
                    pass
            for block in blocks:
                for k, v in block.items():
                    name = ExifTags.TAGS.get(k, str(k))
                    if isinstance(v, bytes):
                        v = v.decode("utf-8", "replace").strip("\x00 ")
                    if isinstance(v, str):
                        v = v.strip("\x00 ")
                    tags[name] = v
            h["exif"] = tags
        return h

    @property
    def format(self) -> str | None:
        f = self.header.get("format")
        if f:
            return str(f).lower()
        if self.path is not None and self.path.suffix:
            return self.path.suffix[1:].lower()
        return None

    @property
    def exif(self) -> dict[str, Any]:
        return self.header.get("exif") or {}

    # -- pixels ------------------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedImage | None:
        """The image if it was handed in or read already (reads nothing)."""
        return self._image

    @property
    def image(self) -> LoadedImage:
        if self._image is None:
            if self.path is None:
                raise InputError("no image and no path to read one from")
            self._image = load_image(self.path)
        return self._image

    @property
    def width(self) -> int | None:
        return self._image.width if self._image is not None else self.header.get("width")

    @property
    def height(self) -> int | None:
        return self._image.height if self._image is not None else self.header.get("height")

    def work(self, max_pixels: int = 1_000_000):
        """An RGB uint8 array at most ``max_pixels`` large, and the factor that maps its
        coordinates back to the original (original = work * scale)."""
        if max_pixels not in self._work:
            import numpy as np  # heavy: numpy, which policy.subject does not load at import
            img = self.image.rgb
            w, h = img.size
            scale = 1.0
            if w * h > max_pixels:
                # always from the original: a classifier's result must not depend on which
                # other classifiers ran before it (Haar cascades notice the resampling path)
                s = (w * h / max_pixels) ** 0.5
                img = img.resize((max(1, round(w / s)), max(1, round(h / s))), Image.BILINEAR, reducing_gap=2.0)
                scale = w / img.width
            self._work[max_pixels] = (np.asarray(img), scale)
        return self._work[max_pixels]


def _regular(path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
