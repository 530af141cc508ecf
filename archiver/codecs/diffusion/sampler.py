"""The DDIM sampler: the decoder's reverse process, shared by the codec and by training.

Kept apart from the pipeline the way diffusers keeps ``schedulers/`` apart from its pipelines:
the pipeline decides *where* to start (the timestep in the header), the sampler only knows how
to walk from there to 0. Training (``archiver_train.codec_tune``) runs these very steps in
float32 to backpropagate through them, so what it tunes is what the decoder runs.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Optional

import numpy as np
import torch

from ...errors import UsageError

#: DDIM steps the encoder suggests when none are given (the decoder may override)
DEFAULT_STEPS = 4


def ddim_timesteps(t: int, steps: int) -> list[int]:
    """Descending timesteps from t, evenly spaced, ``steps`` of them (fewer if t is small)."""
    if t <= 0 or steps <= 0:
        return []
    ts = np.round(np.linspace(t, 0, steps + 1)[:-1]).astype(int)
    return sorted({int(v) for v in ts if v > 0}, reverse=True)


def stream_seed(payload: bytes) -> int:
    """The seed of a stream's sampler noise: the first 8 bytes of the SHA-256 of its latent
    section. Same bytes -> same noise -> same pixels; nothing extra is stored."""
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "little")


def stream_noise(seed: int) -> Callable[[int, tuple], torch.Tensor]:
    """``noise(step, shape)``: float64 standard normal noise from numpy's PCG64 seeded with
    ``seed``, drawn on the CPU so that every machine draws the same numbers."""
    rng = np.random.default_rng(seed)
    return lambda step, shape: torch.from_numpy(rng.standard_normal(tuple(shape)))


def ddim(model_output, alphas_cumprod: torch.Tensor, prediction: str, y_hat: torch.Tensor, t: int,
         steps: int, dtype: torch.dtype = torch.float64, eta: float = 0.0,
         noise: Optional[Callable[[int, tuple], torch.Tensor]] = None) -> torch.Tensor:
    """DDIM from ``x_t = sqrt(abar_t) * y_hat`` at step t down to 0.

    Written from ``alphas_cumprod`` because diffusers' schedulers cannot start at an arbitrary t.
    ``model_output(z, t)`` is the denoiser. The decoder runs it in float64 between model calls
    (same bytes -> same pixels); training runs the very same steps in float32 to backpropagate
    through them.

    ``eta = 0`` is deterministic DDIM. ``eta > 0`` is DDIM's stochastic variant (1 = DDPM's
    ancestral sampling): each step adds fresh noise ``noise(i, shape)`` of std
    ``eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev)``, so the sample
    is drawn from the denoiser's posterior instead of landing on its mean (the mean of many
    plausible textures is a blur). The decoder's noise comes from ``stream_noise``.
    """
    ts = ddim_timesteps(t, steps)
    if not ts:
        return y_hat
    ac = alphas_cumprod.double()
    z = math.sqrt(float(ac[t])) * y_hat.to(dtype)
    for i, ti in enumerate(ts):
        a = float(ac[ti])
        a_prev = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        out = model_output(z.float(), ti).to(dtype=dtype, device=z.device)
        if prediction == "epsilon":
            eps = out
            x0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
        elif prediction == "v_prediction":
            x0 = math.sqrt(a) * z - math.sqrt(1 - a) * out
            eps = math.sqrt(a) * out + math.sqrt(1 - a) * z
        elif prediction == "sample":
            x0 = out
            eps = (z - math.sqrt(a) * x0) / math.sqrt(1 - a)
        else:
            raise UsageError(f"unsupported prediction type {prediction!r}")
        sigma = 0.0
        if eta > 0 and a_prev < 1.0:
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        z = math.sqrt(a_prev) * x0 + math.sqrt(max(0.0, 1 - a_prev - sigma**2)) * eps
        if sigma > 0:
            if noise is None:
                raise ValueError("stochastic DDIM (eta > 0) needs a noise source")
            z = z + sigma * noise(i, tuple(z.shape)).to(dtype=dtype, device=z.device)
    return z.float()


def denoise(backbone, y_hat: torch.Tensor, t: int, steps: int, seed: Optional[int] = None) -> torch.Tensor:
    """The decoder's reverse process with the backbone's denoiser, schedule and sampler noise
    (``backbone.eta``; its noise is seeded by ``seed``, the stream's ``stream_seed``)."""
    eta = float(getattr(backbone, "eta", 0.0) or 0.0)
    if eta > 0 and seed is None:
        raise ValueError("this backbone samples with noise (eta > 0): the stream's seed is needed")
    return ddim(backbone.model_output, backbone.scheduler.alphas_cumprod,
                backbone.scheduler.config.prediction_type, y_hat, t, steps, eta=eta,
                noise=stream_noise(seed) if eta > 0 else None)


def denoise_many(backbone, y_hat: torch.Tensor, t: int, steps: int, seeds: list[int]) -> torch.Tensor:
    """``denoise`` of a batch of latents (one shape, timestep and step count), each with its own
    stream's sampler noise (``seeds[i]``, as ``denoise`` would draw it for that stream alone)."""
    if len(seeds) != y_hat.shape[0]:
        raise ValueError(f"{y_hat.shape[0]} latents but {len(seeds)} seeds")
    eta = float(getattr(backbone, "eta", 0.0) or 0.0)
    noise = None
    if eta > 0:
        streams = [stream_noise(s) for s in seeds]
        noise = lambda step, shape: torch.cat([f(step, (1, *shape[1:])) for f in streams])  # noqa: E731
    return ddim(backbone.model_output, backbone.scheduler.alphas_cumprod,
                backbone.scheduler.config.prediction_type, y_hat, t, steps, eta=eta, noise=noise)
