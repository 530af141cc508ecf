"""Per-channel adaptive quantization of the latent and the timestep that matches its noise.

``q = round((y - mu_c) / step)`` with ``step = delta_c * s`` (``delta_c``: per-channel step
shape, trained by a backbone or 1 by default; ``s``: the global quality factor that rate control
searches). Inside protected regions (``roi``) the step is divided by ``roi_factor``.

Dequantizing gives ``y + n`` with ``n`` roughly uniform of variance ``step^2 / 12``: the
decoder treats it as a diffusion latent whose noise level matches, ``abar_t = 1 / (1 + sigma^2)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: latent boxes (left, top, right, bottom), in latent cells, where steps are finer
Box = tuple[int, int, int, int]


@dataclass
class QuantParams:
    mu: torch.Tensor  # (C,)
    delta: torch.Tensor  # (C,)
    s: float
    roi: list[Box] = field(default_factory=list)
    roi_factor: float = 1.0

    def step_map(self, shape) -> torch.Tensor:
        """The step of every latent element, shape (1, C, h, w)."""
        _, c, h, w = shape
        step = (self.delta.float() * self.s).view(1, c, 1, 1).expand(1, c, h, w).clone()
        if self.roi and self.roi_factor != 1.0:
            for left, top, right, bottom in self.roi:
                step[..., top:bottom, left:right] /= self.roi_factor
        return step


def to_units(y: torch.Tensor, p: QuantParams) -> torch.Tensor:
    """The latent in step units, ``(y - mu) / step``: what the entropy model rounds and codes."""
    c = y.shape[1]
    return (y.float() - p.mu.view(1, c, 1, 1)) / p.step_map(y.shape)


def from_units(u_hat: torch.Tensor, p: QuantParams) -> torch.Tensor:
    c = u_hat.shape[1]
    return u_hat.float() * p.step_map(u_hat.shape) + p.mu.view(1, c, 1, 1)


def quantize(y: torch.Tensor, p: QuantParams) -> torch.Tensor:
    c = y.shape[1]
    return torch.round((y.float() - p.mu.view(1, c, 1, 1)) / p.step_map(y.shape))


def dequantize(q: torch.Tensor, p: QuantParams) -> torch.Tensor:
    c = q.shape[1]
    return q.float() * p.step_map(q.shape) + p.mu.view(1, c, 1, 1)


def noise_variance(p: QuantParams, shape) -> float:
    """Variance of the quantization noise in the (unit-variance) latent: mean(step^2) / 12."""
    return float(p.step_map(shape).pow(2).mean()) / 12.0


def snr_timestep(alphas_cumprod: torch.Tensor, sigma2: float) -> int:
    """The scheduler timestep whose signal-to-noise ratio matches the quantization noise."""
    target = 1.0 / (1.0 + sigma2)
    return int(torch.argmin((alphas_cumprod.double() - target).abs()))


def latent_roi(regions, stride: int, latent_hw: tuple[int, int]) -> list[Box]:
    """Pixel boxes (left, top, right, bottom) -> latent boxes covering them, clipped."""
    h, w = latent_hw
    out = []
    for left, top, right, bottom in regions or ():
        box = (max(0, int(left) // stride), max(0, int(top) // stride),
               min(w, -(-int(right) // stride)), min(h, -(-int(bottom) // stride)))
        if box[2] > box[0] and box[3] > box[1]:
            out.append(box)
    return out
