"""The one small interface every latent diffusion backbone offers the codec.

The codec never touches model internals: it encodes pixels to a unit-variance latent, asks for
the denoiser's prediction at a timestep, and decodes a latent back to pixels. Anything a
backbone may additionally ship for coding (trained per-channel steps, a trained entropy model)
is optional so that any diffusers model works with the generic fallbacks.
"""

from __future__ import annotations

import abc
from typing import Optional

import torch


class Backbone(abc.ABC):
    #: short name written into every bitstream ("tiny", "diffusers")
    id: str
    #: spatial downsampling of the autoencoder; images are padded to a multiple of it
    stride: int
    #: channels of the latent
    latent_channels: int
    #: SHA-256 (hex) over the weights; bitstreams refuse to decode with other weights
    weights_digest: str
    #: a diffusers DDIMScheduler (gives alphas_cumprod, prediction_type, num_train_timesteps)
    scheduler: "object"
    device: torch.device
    dtype: torch.dtype
    #: the encoder starts decoding at round(t_scale * t_snr), t_snr from SNR matching. 1.0 is pure
    #: SNR matching; a model whose denoiser prefers less noise than that (measured on training
    #: images) ships a smaller value
    t_scale: float = 1.0
    #: the sampler's noise (``codec.sampler.ddim``): 0 = deterministic DDIM; > 0 adds fresh noise
    #: at each step, seeded from the stream, so a model trained for it samples texture instead of
    #: its posterior mean (a blur). A property of the weights, so files name it by digest
    eta: float = 0.0
    #: True when the autoencoder was trained on its own quantization grid (a rate–distortion
    #: latent, weights release 3): the encoder then codes around zero with the backbone's
    #: channel steps (no per-image channel means)
    trained_grid: bool = False

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1], shape (B, 3, H, W) with H, W multiples of ``stride`` ->
        latent (B, C, H/stride, W/stride): posterior mean times the model's scaling factor."""

    @abc.abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> pixels in [-1, 1]."""

    @abc.abstractmethod
    def model_output(self, z_t: torch.Tensor, t: int) -> torch.Tensor:
        """The denoiser's raw output at integer timestep ``t`` (what the scheduler's
        ``prediction_type`` says it is: epsilon, v_prediction or sample)."""

    def channel_steps(self) -> Optional[torch.Tensor]:
        """Trained per-channel quantization steps (C,), or None to use the generic default."""
        return None

    def entropy_model(self) -> Optional[torch.nn.Module]:
        """A trained entropy model for the quantized latent, or None for the generic one."""
        return None

    def describe(self) -> dict:
        return {"id": self.id, "weights_sha256": self.weights_digest, "stride": self.stride,
                "latent_channels": self.latent_channels, "device": str(self.device)}
