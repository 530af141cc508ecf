"""The latent-diffusion codec (see docs/codec.md): ``codec.DiffusionCodec`` (registered as
``diffusion``) over its internals: container, quantize, entropy, pipeline, sampler, ratecontrol,
tensors, files, adapter and ``backbones``. Importing this package loads no torch."""

from .codec import DiffusionCodec

__all__ = ["DiffusionCodec"]
