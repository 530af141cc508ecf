"""Entropy models for the quantized latent: real bits through compressai's rANS coder.

Two models share one byte-level interface (``compress(q) -> bytes``, ``decompress(bytes, shape)
-> q``), where ``q`` is the integer latent ``round((y - mu_c) / (delta_c * s))``:

- ``ChannelGaussianEntropyModel``: the generic fallback for any backbone. A zero-mean Gaussian
  per channel whose scale (an index into compressai's scale table, one byte per channel) is side
  information, so nothing needs training.
- ``HyperpriorEntropyModel``: a trainable scale hyperprior (Ballé et al. 2018) with small conv
  ``h_a``/``h_s``. ``forward`` is training-friendly (noise instead of rounding, returns
  likelihoods for a rate loss); a backbone that ships one returns it from ``entropy_model()``.
"""

from __future__ import annotations

import functools
import math
import struct
import warnings

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():  # compressai's optional imports emit deprecation noise
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.models import CompressionModel
    from compressai.models.utils import conv, deconv

#: compressai's default scale table (64 log-spaced scales 0.11 .. 256), fixed here so that the
#: bitstream format does not change if compressai changes its default
SCALE_TABLE = torch.exp(torch.linspace(math.log(0.11), math.log(256.0), 64))


def rate_bits(likelihoods: dict[str, torch.Tensor]) -> torch.Tensor:
    """Total bits implied by a ``likelihoods`` dict (the rate term of a training loss)."""
    return sum((-torch.log2(v)).sum() for v in likelihoods.values())


class ChannelGaussianEntropyModel(nn.Module):
    """Generic entropy model: one Gaussian scale per channel, sent as a table index (C bytes)."""

    kind = 0

    def __init__(self):
        super().__init__()
        self.gaussian_conditional = GaussianConditional(None)
        self.gaussian_conditional.update_scale_table(SCALE_TABLE)

    def _indexes_from_table(self, table_idx: torch.Tensor, shape) -> torch.Tensor:
        return table_idx.view(1, -1, 1, 1).expand(shape).int().contiguous()

    @torch.no_grad()
    def compress(self, q: torch.Tensor) -> bytes:
        """``q``: integer-valued float tensor (1, C, h, w) -> side info + rANS string."""
        q = q.float().cpu()
        std = q.pow(2).mean(dim=(0, 2, 3)).sqrt()  # zero-mean by construction: RMS is the scale
        table_idx = self.gaussian_conditional.build_indexes(std.view(1, -1, 1, 1)).view(-1)
        idx = self._indexes_from_table(table_idx, q.shape)
        (string,) = self.gaussian_conditional.compress(q, idx)
        return bytes(table_idx.to(torch.uint8).tolist()) + string

    @torch.no_grad()
    def decompress(self, data: bytes, shape: tuple[int, int, int, int]) -> torch.Tensor:
        c = shape[1]
        if len(data) < c:
            raise ValueError("latent section shorter than its side information")
        table_idx = torch.tensor(list(data[:c]), dtype=torch.int32)
        if int(table_idx.max()) >= len(SCALE_TABLE):
            raise ValueError("scale index out of range")
        idx = self._indexes_from_table(table_idx, shape)
        return self.gaussian_conditional.decompress([data[c:]], idx)


class HyperpriorEntropyModel(CompressionModel):
    """Trainable scale hyperprior for the quantized latent of a backbone.

    Works in the quantization domain ``u = (y - mu_c) / (delta_c * s)`` so that one model serves
    every quality factor ``s`` (train it with random ``s``). Latent sizes that are not multiples
    of 4 are zero-padded for the hyper path and cropped back.

    After training (or after loading weights) call ``update(force=True)`` once so the CDF tables
    exist; they are buffers and travel with ``state_dict`` (load with this class's
    ``load_state_dict``, which resizes them).
    """

    kind = 1

    def __init__(self, latent_channels: int = 4, hyper_channels: int = 32):
        super().__init__()
        self.latent_channels = latent_channels
        self.hyper_channels = hyper_channels
        n = hyper_channels
        self.h_a = nn.Sequential(
            conv(latent_channels, n, kernel_size=3, stride=1),
            nn.ReLU(inplace=True),
            conv(n, n, kernel_size=5, stride=2),
            nn.ReLU(inplace=True),
            conv(n, n, kernel_size=5, stride=2),
        )
        self.h_s = nn.Sequential(
            deconv(n, n, kernel_size=5, stride=2),
            nn.ReLU(inplace=True),
            deconv(n, n, kernel_size=5, stride=2),
            nn.ReLU(inplace=True),
            conv(n, latent_channels, kernel_size=3, stride=1),
        )
        self.entropy_bottleneck = EntropyBottleneck(n)
        self.gaussian_conditional = GaussianConditional(None)

    @staticmethod
    def _pad4(u: torch.Tensor) -> torch.Tensor:
        h, w = u.shape[-2:]
        return F.pad(u, (0, (-w) % 4, 0, (-h) % 4))

    def _scales(self, z_hat: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return F.softplus(self.h_s(z_hat))[..., :h, :w]

    def forward(self, u: torch.Tensor) -> dict:
        """Training pass. ``u``: continuous latent in step units (B, C, h, w).

        Returns ``{"u_hat": noisy/rounded u, "likelihoods": {"y": ..., "z": ...}}``; use
        ``rate_bits(out["likelihoods"])`` for the rate and ``u_hat * delta * s + mu`` for the
        reconstruction path.
        """
        h, w = u.shape[-2:]
        z = self.h_a(self._pad4(u).abs())
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales = self._scales(z_hat, h, w)
        u_hat, y_likelihoods = self.gaussian_conditional(u, scales)
        return {"u_hat": u_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def update(self, scale_table=None, force: bool = False, update_quantiles: bool = False) -> bool:
        return super().update(SCALE_TABLE if scale_table is None else scale_table, force=force,
                              update_quantiles=update_quantiles)

    def _ensure_tables(self) -> None:
        if self.gaussian_conditional._offset.numel() == 0 or self.entropy_bottleneck._offset.numel() == 0:
            self.update(force=True)

    @torch.no_grad()
    def compress(self, q: torch.Tensor) -> bytes:
        """Integer latent (1, C, h, w) -> ``u32 len(z) | z string | y string``."""
        self._ensure_tables()
        q = q.float()
        h, w = q.shape[-2:]
        z = self.h_a(self._pad4(q).abs())
        (z_string,) = self.entropy_bottleneck.compress(z)
        # scales from the *decoded* hyper-latent, exactly as the decoder will compute them
        z_hat = self.entropy_bottleneck.decompress([z_string], z.shape[-2:])
        idx = self.gaussian_conditional.build_indexes(self._scales(z_hat, h, w))
        (y_string,) = self.gaussian_conditional.compress(q, idx)
        return struct.pack("<I", len(z_string)) + z_string + y_string

    @torch.no_grad()
    def decompress(self, data: bytes, shape: tuple[int, int, int, int]) -> torch.Tensor:
        self._ensure_tables()
        if len(data) < 4:
            raise ValueError("latent section too short")
        (zlen,) = struct.unpack_from("<I", data)
        if 4 + zlen > len(data):
            raise ValueError("hyper-latent length exceeds the section")
        h, w = shape[-2:]
        zshape = ((h + 3) // 4, (w + 3) // 4)
        z_hat = self.entropy_bottleneck.decompress([data[4:4 + zlen]], zshape)
        idx = self.gaussian_conditional.build_indexes(self._scales(z_hat, h, w))
        return self.gaussian_conditional.decompress([data[4 + zlen:]], idx)


@functools.lru_cache(maxsize=1)
def generic_entropy_model() -> ChannelGaussianEntropyModel:
    """One shared instance: building its CDF tables takes ~0.1 s; it holds no per-image state."""
    return ChannelGaussianEntropyModel()


def get_entropy_model(kind: int, backbone=None) -> nn.Module:
    """The entropy model a bitstream names: 0 generic, 1 the backbone's trained hyperprior."""
    if kind == ChannelGaussianEntropyModel.kind:
        return generic_entropy_model()
    if kind == HyperpriorEntropyModel.kind:
        model = backbone.entropy_model() if backbone is not None else None
        if model is None:
            raise ValueError("the bitstream uses a trained entropy model that this backbone does not have")
        return model
    raise ValueError(f"unknown entropy model kind {kind}")
