"""The lossless codec: ``codec.LosslessCodec`` (registered as ``lossless``) over ``format`` (JPEG ->
JPEG XL with reconstruction data, other images -> lossless JPEG XL, and back)."""

from .codec import LosslessCodec

__all__ = ["LosslessCodec"]
