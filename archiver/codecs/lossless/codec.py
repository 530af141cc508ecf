"""The lossless codec (``format``: JPEG XL transcoding) as a ``Codec``: JPEG -> JPEG XL with JPEG
reconstruction data (the identical bytes come back), other images -> lossless JPEG XL (the same
pixels and metadata come back: ``format.content_digest``). Declared exactness: pixels;
each file records whether it also gives the bytes back."""

from __future__ import annotations

import hashlib

from PIL import Image

from ...errors import ArchiverError
from ..base import Codec, CodecRefused, Encoded, Exactness, Recorded, Restored, Source, Target, Verdict
from ..registry import register_codec


@register_codec("lossless")
class LosslessCodec(Codec):
    version = 1
    ext = ".jxl"
    exts = (".jxl", ".axl")
    exactness = Exactness.PIXELS
    summary = "exact: JPEG -> JPEG XL (bytes back), others -> lossless JPEG XL (pixels back)"

    @classmethod
    def claims(cls, data: bytes) -> bool:
        """An .axl file, or a JPEG XL container with archiver's restore record or JPEG
        reconstruction data (a damaged container too: decoding it says what is wrong). A plain
        JPEG XL image, e.g. the lossy ``jxl`` codec's, is not this codec's."""
        from .format import is_restorable  # heavy: the JPEG XL container (lossless.format, ~5 ms), not loaded by archiver --help

        return is_restorable(data)

    def encode(self, source: Source, target: Target) -> Encoded:
        from . import format as lossless  # heavy: the JPEG XL container (lossless.format, ~5 ms), not loaded by archiver --help

        try:
            blob, ext = lossless.compress(source.data)
        except lossless.LosslessUnsupported as e:
            raise CodecRefused(f"recompression not possible ({e})") from None
        return Encoded(blob, self.name, self.version, ext, len(blob) * 8 / source.pixels,
                       params={"container": ext.lstrip(".")})

    def decode(self, data: bytes) -> Image.Image:
        from . import format as lossless  # heavy: the JPEG XL container (lossless.format, ~5 ms), not loaded by archiver --help

        return lossless.restore_image(data)

    def verify(self, data: bytes, source: Source, target: Target) -> Verdict:
        """Against the original itself: the promise is recorded only if the artifact keeps it. A
        JPEG must come back byte for byte; anything else with the same ``content_digest`` (every
        frame's pixels at full bit depth, palette, the metadata docs/safety.md lists)."""
        from . import format as lossless  # heavy: the JPEG XL container (lossless.format, ~5 ms), not loaded by archiver --help

        try:
            back = lossless.restore(data)
        except ArchiverError as e:
            return Verdict(False, f"lossless file does not decode ({e})")
        if lossless.is_jpeg(source.data):
            if back != source.data:
                return Verdict(False, "lossless restore differs from the original")
            return Verdict(True, exact=Exactness.BYTES.value, ms_ssim=1.0,
                           reconstruction_sha256=hashlib.sha256(back).hexdigest())
        try:
            digest = lossless.content_digest(source.data)
            same = lossless.content_digest(back) == digest
        except ArchiverError as e:
            return Verdict(False, f"the image cannot be compared exactly ({e})")
        if not same:
            return Verdict(False, "lossless restore differs from the original (pixels or metadata)")
        return Verdict(True, exact=Exactness.PIXELS.value, ms_ssim=1.0, reconstruction_sha256=digest)

    def restore(self, data: bytes, recorded: Recorded) -> Restored:
        """Against the catalog: the original's bytes, or, where pixels were promised, an image with
        the recorded ``content_digest`` (its file bytes may differ: no dependence on one zlib)."""
        from . import format as lossless  # heavy: the JPEG XL container (lossless.format, ~5 ms), not loaded by archiver --help

        back = lossless.restore(data)
        sha = hashlib.sha256(back).hexdigest()
        if sha == recorded.sha256:
            return Restored(Exactness.BYTES.value, back)
        if recorded.exact != Exactness.BYTES.value and recorded.reconstruction_sha256:
            if sha == recorded.reconstruction_sha256:  # rows of earlier versions recorded the file's hash
                return Restored(Exactness.PIXELS.value, back)
            if lossless.content_digest(back) == recorded.reconstruction_sha256:
                return Restored(Exactness.PIXELS.value, back)
        raise ArchiverError(f"{recorded.path}: lossless restore does not match the catalog")
