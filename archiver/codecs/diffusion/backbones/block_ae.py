"""A block-transform autoencoder for the embedded backbone, built to train on a CPU in minutes.

Why not a small AutoencoderKL: on two CPU cores a convolutional VAE trained from scratch gets a
few hundred steps an hour and stays blurry (about 20 dB). An 8x8 block transform initialised
with the principal components of natural-image blocks is already a decent autoencoder before
any training (about 25.6 dB on Kodak with 8 components); small convolutions at latent
resolution then learn the non-linear part from neighbouring blocks (context, deblocking), and
a tiny full-resolution head removes the remaining block edges. Everything heavy runs at 1/8
resolution, so a 768x512 image decodes in a fraction of a second.

It speaks AutoencoderKL's interface (``encode(x).latent_dist``, ``decode(z).sample``, config
with ``latent_channels``, ``scaling_factor``, ``block_out_channels`` giving the stride), so the
codec's diffusers backbone and the training stages use it unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import diffusers_light

diffusers_light.load()  # only the diffusers modules used here (start-up time)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin

BLOCK = 8


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


def _zero(m: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(m.weight)
    nn.init.zeros_(m.bias)
    return m


class BlockAutoencoder(ModelMixin, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(self, kind: str = "block", latent_channels: int = 8, hidden_channels: int = 128,
                 encoder_blocks: int = 1, decoder_blocks: int = 3, refine_channels: int = 16,
                 block_out_channels: tuple = (8, 8, 8, 8), scaling_factor: float = 1.0,
                 force_upcast: bool = False, deblock_channels: int = 0, deblock_blocks: int = 0):
        super().__init__()
        d = 3 * BLOCK * BLOCK
        c, h = latent_channels, hidden_channels
        self.unshuffle, self.shuffle = nn.PixelUnshuffle(BLOCK), nn.PixelShuffle(BLOCK)
        # linear block transform (PCA-initialised) + learned non-linear corrections
        self.analysis = nn.Conv2d(d, c, 1)
        self.enc_ctx = nn.Sequential(nn.Conv2d(d, h, 3, padding=1), nn.SiLU(),
                                     *[_ResBlock(h) for _ in range(encoder_blocks)], _zero(nn.Conv2d(h, c, 3, padding=1)))
        self.logvar = nn.Parameter(torch.full((c,), -8.0))
        self.synthesis = nn.Conv2d(c, d, 1)
        self.dec_ctx = nn.Sequential(nn.Conv2d(c, h, 3, padding=1), nn.SiLU(),
                                     *[_ResBlock(h) for _ in range(decoder_blocks)], _zero(nn.Conv2d(h, d, 3, padding=1)))
        r = refine_channels
        self.refine = nn.Sequential(nn.Conv2d(3, r, 3, padding=1), nn.SiLU(), _zero(nn.Conv2d(r, 3, 3, padding=1)))
        # optional deeper full-resolution head (0 = none, as in weights release 1): it sees across
        # block edges, which the per-block synthesis cannot; zero-initialised, so adding it to a
        # trained model changes nothing until it is trained
        self.deblock = None
        if deblock_channels and deblock_blocks:
            k = deblock_channels
            self.deblock = nn.Sequential(nn.Conv2d(3, k, 3, padding=1), nn.SiLU(),
                                         *[_ResBlock(k) for _ in range(deblock_blocks)],
                                         _zero(nn.Conv2d(k, 3, 3, padding=1)))

    @torch.no_grad()
    def init_from_blocks(self, blocks: torch.Tensor) -> None:
        """Set the linear transform to the principal components of ``blocks`` (N, 192) in [-1, 1],
        scaled so every latent channel starts with unit variance."""
        c = self.config.latent_channels
        mu = blocks.mean(0)
        _, s, vt = torch.linalg.svd(blocks - mu, full_matrices=False)
        comps = vt[:c]  # (c, d)
        std = (s[:c] / (blocks.shape[0] - 1) ** 0.5).clamp_min(1e-6)
        enc = comps / std[:, None]
        self.analysis.weight.copy_(enc[:, :, None, None])
        self.analysis.bias.copy_(-(enc @ mu))
        dec = comps.T * std[None, :]
        self.synthesis.weight.copy_(dec[:, :, None, None])
        self.synthesis.bias.copy_(mu)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        u = self.unshuffle(x)
        mean = self.analysis(u) + self.enc_ctx(u)
        logvar = self.logvar.view(1, -1, 1, 1).expand_as(mean)
        dist = DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, **_):
        y = self.shuffle(self.synthesis(z) + self.dec_ctx(z))
        y = y + self.refine(y)
        if self.deblock is not None:
            y = y + self.deblock(y)
        return DecoderOutput(sample=y) if return_dict else (y,)

    def forward(self, x: torch.Tensor, sample_posterior: bool = False):
        post = self.encode(x).latent_dist
        return self.decode(post.sample() if sample_posterior else post.mode())
