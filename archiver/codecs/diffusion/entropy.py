"""Entropy models for the quantized latent: real bits through compressai's rANS coder.

Every model codes the latent in step units ``u = (y - mu_c) / (delta_c * s)`` through one
interface, ``encode(u) -> (bytes, u_hat)`` and ``decode(bytes, shape) -> u_hat``: the entropy
model owns the last rounding, because a model that predicts means quantizes around them.
``y_hat = u_hat * delta_c * s + mu_c`` is what the decoder gets.

- ``ChannelGaussianEntropyModel``: the generic fallback for any backbone. A zero-mean Gaussian
  per channel and block of latent cells whose scale (an index into compressai's scale table, one
  byte each) is side information, so nothing needs training.
- ``HyperpriorEntropyModel``: a trainable scale hyperprior (Ballé et al. 2018) with small conv
  ``h_a``/``h_s``. ``forward`` is training-friendly (noise instead of rounding, returns
  likelihoods for a rate loss); a backbone that ships one returns it from ``entropy_model()``.
- ``CheckerboardEntropyModel``: a mean-and-scale hyperprior with compressai's two-pass
  checkerboard context (He et al., CVPR 2021). The block-transform latent's first channel is a
  1/8-size thumbnail of the image whose neighbours predict it well: at 0.05 bpp it took 42% of
  the scale hyperprior's bits. Two passes keep decoding parallel (no raster-order loop).
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
    from . import compressai_light

    compressai_light.load()  # without its point-cloud half (start-up time)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.layers import CheckerboardMaskedConv2d
    from compressai.latent_codecs import CheckerboardLatentCodec, GaussianConditionalLatentCodec
    from compressai.models import CompressionModel
    from compressai.models.utils import conv, deconv

#: compressai's default scale table (64 log-spaced scales 0.11 .. 256), fixed here so that the
#: bitstream format does not change if compressai changes its default
SCALE_TABLE = torch.exp(torch.linspace(math.log(0.11), math.log(256.0), 64))


#: ``scipy.special.ndtri`` of the quantiles the codec's entropy models ask for (half of
#: compressai's default ``tail_mass``, 1e-9), as scipy computes them: the same doubles without
#: importing scipy (0.4-0.7 s of every decode's start-up); tests hold them to scipy
KNOWN_NDTRI = {5e-10: -6.1094102048693975}


def norm_ppf(q):
    """``scipy.stats.norm.ppf(q)``, which scipy defines as ``scipy.special.ndtri(q)``: the same
    double, without importing scipy.stats (~0.7 CPU-seconds of a decode's start-up), nor scipy at
    all for the quantiles in ``KNOWN_NDTRI``."""
    if isinstance(q, float) and q in KNOWN_NDTRI:
        return KNOWN_NDTRI[q]
    from scipy.special import ndtri  # heavy: scipy, slow to import

    return ndtri(q)


def _light_quantiles(model: nn.Module) -> None:
    """Let ``model``'s GaussianConditionals build their CDF tables with ``norm_ppf``."""
    for m in model.modules():
        if isinstance(m, GaussianConditional):
            m._standardized_quantile = norm_ppf


class _RoundingCoder:
    """``encode``/``decode`` for models that code integers: plain rounding in step units."""

    def encode(self, u: torch.Tensor) -> tuple[bytes, torch.Tensor]:
        q = torch.round(u.float())
        return self.compress(q), q

    def decode(self, data: bytes, shape) -> torch.Tensor:
        return self.decompress(data, shape).float()


def rate_bits(likelihoods: dict[str, torch.Tensor]) -> torch.Tensor:
    """Total bits implied by a ``likelihoods`` dict (the rate term of a training loss)."""
    return sum((-torch.log2(v)).sum() for v in likelihoods.values())


class ChannelGaussianEntropyModel(_RoundingCoder, nn.Module):
    """Generic entropy model: a zero-mean Gaussian per channel and per block of latent cells,
    its scale sent as a table index (one byte per channel and block).

    Small blocks fit images that mix flat sky and busy foliage; at low rates their side
    information costs more than they save, so the encoder tries each block size in ``BLOCKS``
    (0 = one block for the whole channel) and keeps the smallest result.
    """

    kind = 0
    BLOCKS = (0, 32, 16, 8)

    def __init__(self):
        super().__init__()
        self.gaussian_conditional = GaussianConditional(None)
        _light_quantiles(self)
        self.gaussian_conditional.update_scale_table(SCALE_TABLE)

    @staticmethod
    def _block(code: int, shape) -> int:
        return max(shape[-2:]) if code == 0 else code

    @staticmethod
    def _grid(block: int, shape) -> tuple[int, int]:
        h, w = shape[-2:]
        return -(-h // block), -(-w // block)

    @staticmethod
    def _expand(table_idx: torch.Tensor, block: int, shape) -> torch.Tensor:
        """(C, nby, nbx) block indexes -> per-element indexes of ``shape``."""
        full = table_idx.repeat_interleave(block, dim=1).repeat_interleave(block, dim=2)
        return full[None, :, : shape[-2], : shape[-1]].int().contiguous()

    def _compress_blocks(self, q: torch.Tensor, code: int) -> bytes:
        c, h, w = q.shape[1:]
        b = self._block(code, q.shape)
        nby, nbx = self._grid(b, q.shape)
        pad = (0, nbx * b - w, 0, nby * b - h)
        # zero-mean by construction: the RMS of each block is its scale
        sums = F.pad(q[0].pow(2), pad).view(c, nby, b, nbx, b).sum(dim=(2, 4))
        n = F.pad(torch.ones_like(q[0]), pad).view(c, nby, b, nbx, b).sum(dim=(2, 4))
        table_idx = self.gaussian_conditional.build_indexes((sums / n).sqrt()).view(c, nby, nbx)
        (string,) = self.gaussian_conditional.compress(q, self._expand(table_idx, b, q.shape))
        return bytes([code]) + bytes(table_idx.to(torch.uint8).flatten().tolist()) + string

    @torch.no_grad()
    def compress(self, q: torch.Tensor) -> bytes:
        """``q``: integer-valued float tensor (1, C, h, w) -> block size, scale indexes, rANS string."""
        q = q.float().cpu()
        candidates = [code for code in self.BLOCKS if code == 0 or code < max(q.shape[-2:])]
        return min((self._compress_blocks(q, code) for code in candidates), key=len)

    @torch.no_grad()
    def decompress(self, data: bytes, shape: tuple[int, int, int, int]) -> torch.Tensor:
        if not data or data[0] not in self.BLOCKS:
            raise ValueError("unknown block size in the latent section")
        b = self._block(data[0], shape)
        nby, nbx = self._grid(b, shape)
        side = 1 + shape[1] * nby * nbx
        if len(data) < side:
            raise ValueError("latent section shorter than its side information")
        table_idx = torch.tensor(list(data[1:side]), dtype=torch.int32).view(shape[1], nby, nbx)
        if int(table_idx.max()) >= len(SCALE_TABLE):
            raise ValueError("scale index out of range")
        return self.gaussian_conditional.decompress([data[side:]], self._expand(table_idx, b, shape))


class _HyperpriorBase(CompressionModel):
    """What the trained models share: a hyper path of stride 4 and compressai's CDF tables built
    from the codec's fixed scale table."""

    @staticmethod
    def _pad4(u: torch.Tensor) -> torch.Tensor:
        h, w = u.shape[-2:]
        return F.pad(u, (0, (-w) % 4, 0, (-h) % 4))

    def update(self, scale_table=None, force: bool = False, update_quantiles: bool = False) -> bool:
        _light_quantiles(self)
        return super().update(SCALE_TABLE if scale_table is None else scale_table, force=force,
                              update_quantiles=update_quantiles)

    def _ensure_tables(self) -> None:
        """Build the CDF tables on first use if nobody called ``update`` after loading."""
        coders = [m for m in self.modules() if isinstance(m, (EntropyBottleneck, GaussianConditional))]
        if any(m._offset.numel() == 0 for m in coders):
            self.update(force=True)


class HyperpriorEntropyModel(_RoundingCoder, _HyperpriorBase):
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


class _CheckerboardContext(CheckerboardMaskedConv2d):
    """compressai's checkerboard context convolution, without the write in its ``forward``
    (``weight.data = weight.data * mask`` on every call): with threads coding at once, one
    thread's write frees the weights another thread's convolution is reading (garbled bits).
    Masking a copy gives the very same numbers (the mask is 0 or 1) and changes nothing shared;
    the parameters and buffers, hence the checkpoints, are compressai's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class CheckerboardEntropyModel(_HyperpriorBase):
    """Mean-scale hyperprior with a two-pass checkerboard context, on step units ``u``.

    Anchors (half the cells) are coded from the hyper-latent alone; the others also see their
    decoded anchor neighbours through a masked 5x5 convolution. Quantization is
    ``round(u - mean) + mean``, so ``u_hat`` is not an integer grid: ``encode`` returns it so the
    encoder sees exactly what the decoder will. Latents are zero-padded to multiples of 4 (the
    hyper path's stride) and cropped back.
    """

    kind = 2

    def __init__(self, latent_channels: int = 8, hyper_channels: int = 32, param_channels: tuple | None = None,
                 bottleneck_init_scale: float = 10.0):
        """``bottleneck_init_scale`` only shapes the untrained model: compressai's default (10)
        starts the hyper-latent's density wide, so its first hundreds of steps pay several bits
        per hyper-latent element; 1.0 lets a short run (an adapter) gain from its first steps."""
        super().__init__()
        c, n = latent_channels, hyper_channels
        self.latent_channels, self.hyper_channels = c, n
        # hidden widths of the 1x1 parameter network: 8C suits a few channels (release 2); wide
        # latents use narrower ones, as Minnen et al.'s 10C/3 and 8C/3
        p1, p2 = param_channels or (8 * c, 8 * c)
        self.h_a = nn.Sequential(
            conv(c, n, kernel_size=3, stride=1), nn.GELU(),
            conv(n, n, kernel_size=5, stride=2), nn.GELU(),
            conv(n, n, kernel_size=5, stride=2),
        )
        self.h_s = nn.Sequential(
            deconv(n, n, kernel_size=5, stride=2), nn.GELU(),
            deconv(n, 2 * n, kernel_size=5, stride=2), nn.GELU(),
            conv(2 * n, 2 * c, kernel_size=3, stride=1),
        )
        self.entropy_bottleneck = EntropyBottleneck(n, init_scale=bottleneck_init_scale)
        self.latent_codec = CheckerboardLatentCodec(
            latent_codec={"y": GaussianConditionalLatentCodec(scale_table=SCALE_TABLE.tolist(), quantizer="ste")},
            entropy_parameters=nn.Sequential(
                nn.Conv2d(4 * c, p1, 1), nn.GELU(), nn.Conv2d(p1, p2, 1), nn.GELU(),
                nn.Conv2d(p2, 2 * c, 1)),
            context_prediction=_CheckerboardContext(c, 2 * c, kernel_size=5, padding=2),
            forward_method="twopass",
        )

    def forward(self, u: torch.Tensor) -> dict:
        """Training pass: ``{"u_hat", "likelihoods": {"y", "z"}}`` (see ``HyperpriorEntropyModel``)."""
        h, w = u.shape[-2:]
        up = self._pad4(u)
        z = self.h_a(up)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        out = self.latent_codec(up, self.h_s(z_hat))
        return {"u_hat": out["y_hat"][..., :h, :w],
                "likelihoods": {"y": out["likelihoods"]["y"][..., :h, :w], "z": z_likelihoods}}

    @torch.no_grad()
    def encode(self, u: torch.Tensor) -> tuple[bytes, torch.Tensor]:
        """Step units (1, C, h, w) -> ``u32 len(z) | z | u32 len(anchors) | anchors | others``, u_hat."""
        self._ensure_tables()
        h, w = u.shape[-2:]
        up = self._pad4(u.float())
        z = self.h_a(up)
        (z_string,) = self.entropy_bottleneck.compress(z)
        # side parameters from the *decoded* hyper-latent, exactly as the decoder computes them
        z_hat = self.entropy_bottleneck.decompress([z_string], z.shape[-2:])
        out = self.latent_codec.compress(up, self.h_s(z_hat))
        (anchors,), (others,) = out["strings"]
        data = struct.pack("<I", len(z_string)) + z_string + struct.pack("<I", len(anchors)) + anchors + others
        return data, out["y_hat"][..., :h, :w]

    @torch.no_grad()
    def decode(self, data: bytes, shape: tuple[int, int, int, int]) -> torch.Tensor:
        self._ensure_tables()
        h, w = shape[-2:]
        hp, wp = h + (-h) % 4, w + (-w) % 4
        if len(data) < 4:
            raise ValueError("latent section too short")
        (zlen,) = struct.unpack_from("<I", data)
        if 8 + zlen > len(data):
            raise ValueError("hyper-latent length exceeds the section")
        (alen,) = struct.unpack_from("<I", data, 4 + zlen)
        if 8 + zlen + alen > len(data):
            raise ValueError("anchor length exceeds the section")
        z_hat = self.entropy_bottleneck.decompress([data[4:4 + zlen]], (hp // 4, wp // 4))
        strings = [[data[8 + zlen:8 + zlen + alen]], [data[8 + zlen + alen:]]]
        out = self.latent_codec.decompress(strings, (shape[1], hp, wp), self.h_s(z_hat))
        return out["y_hat"][..., :h, :w]


ENTROPY_MODELS = {"hyperprior": HyperpriorEntropyModel, "checkerboard": CheckerboardEntropyModel}


def build_entropy_model(config: dict) -> nn.Module:
    """A trainable entropy model from its config (``kind`` picks the class; hyperprior if absent)."""
    cfg = dict(config)
    cls = ENTROPY_MODELS[cfg.pop("kind", "hyperprior")]
    return cls(**cfg)


@functools.lru_cache(maxsize=1)
def generic_entropy_model() -> ChannelGaussianEntropyModel:
    """One shared instance: building its CDF tables takes ~0.1 s; it holds no per-image state."""
    return ChannelGaussianEntropyModel()


def get_entropy_model(kind: int, backbone=None) -> nn.Module:
    """The entropy model a bitstream names: 0 generic, 1 the backbone's trained scale hyperprior,
    2 its trained checkerboard mean-scale model."""
    if kind == ChannelGaussianEntropyModel.kind:
        return generic_entropy_model()
    if kind in (HyperpriorEntropyModel.kind, CheckerboardEntropyModel.kind):
        model = backbone.entropy_model() if backbone is not None else None
        if model is None or getattr(model, "kind", None) != kind:
            raise ValueError("the bitstream uses a trained entropy model that this backbone does not have")
        return model
    raise ValueError(f"unknown entropy model kind {kind}")
