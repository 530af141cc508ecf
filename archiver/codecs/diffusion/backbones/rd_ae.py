"""The rate–distortion-trained autoencoder of weights release 3 (``kind: rd``).

Ballé et al.'s analysis/synthesis transforms with GDN, as compressai's ``MeanScaleHyperprior``
(Minnen et al. 2018) builds them: strided 5x5 convolutions with GDN between them, transposed
convolutions with inverse GDN on the way back. They are trained *jointly* with the codec's
checkerboard entropy model on rate + lambda x distortion (``archiver_train/rd.py``, packages/archiver-train), so the
latent is a coding space first: its quantization step (1 in its own units) is where its rate
and distortion were optimised. The latent diffusion model then works in that space.

It speaks AutoencoderKL's interface (``encode(x).latent_dist``, ``decode(z).sample``, a config
with ``latent_channels``, ``scaling_factor`` and ``block_out_channels`` whose length gives the
stride), so the codec's ``DiffusersBackbone`` and the training stages use it unchanged and the
Stable Diffusion path is untouched. The posterior is deterministic (a rate–distortion latent has
no KL term): ``latent_dist.mean == mode() == sample()``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .. import diffusers_light

diffusers_light.load()  # only the diffusers modules used here (start-up time)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin

with warnings.catch_warnings():  # compressai's optional imports emit deprecation noise
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    from .. import compressai_light

    compressai_light.load()  # without its point-cloud half (start-up time)
    from compressai.layers import GDN
    from compressai.models.utils import conv, deconv


class RDAutoencoder(ModelMixin, ConfigMixin):
    """``g_a``: 3 -> N -> ... -> M channels, each 5x5 convolution of stride 2 followed by GDN
    (none after the last); ``g_s`` mirrors it with inverse GDN. ``len(block_out_channels) - 1``
    such layers give the stride (5 entries = 16, Minnen et al.'s; 4 = 8, Stable Diffusion's)."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, kind: str = "rd", channels: int = 128, latent_channels: int = 192,
                 block_out_channels: tuple = (128, 128, 128, 128, 192), scaling_factor: float = 1.0,
                 force_upcast: bool = False):
        super().__init__()
        n_layers = len(block_out_channels) - 1
        if n_layers < 2:
            raise ValueError("an rd autoencoder needs a stride of at least 4 (3+ block_out_channels)")
        n, m = int(channels), int(latent_channels)
        enc: list[nn.Module] = []
        dec: list[nn.Module] = []
        for i in range(n_layers):
            last = i == n_layers - 1
            enc.append(conv(3 if i == 0 else n, m if last else n))
            if not last:
                enc.append(GDN(n))
            dec.append(deconv(m if i == 0 else n, 3 if last else n))
            if not last:
                dec.append(GDN(n, inverse=True))
        self.g_a = nn.Sequential(*enc)
        self.g_s = nn.Sequential(*dec)

    @property
    def stride(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        y = self.g_a(x)
        dist = DiagonalGaussianDistribution(torch.cat([y, torch.zeros_like(y)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, **_):
        x = self.g_s(z)
        return DecoderOutput(sample=x) if return_dict else (x,)

    def forward(self, x: torch.Tensor, sample_posterior: bool = False):
        return self.decode(self.g_a(x))

    def decoder_modules(self) -> list[nn.Module]:
        """What ``decode`` runs (the realism stage fine-tunes exactly these)."""
        return [self.g_s]
