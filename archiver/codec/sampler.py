"""The DDIM sampler: the decoder's reverse process, shared by the codec and by training.

Kept apart from the pipeline the way diffusers keeps ``schedulers/`` apart from its pipelines:
the pipeline decides *where* to start (the timestep in the header), the sampler only knows how
to walk from there to 0. Training (``archiver.train.codec_tune``) runs these very steps in
float32 to backpropagate through them, so what it tunes is what the decoder runs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import UsageError

#: DDIM steps the encoder suggests when none are given (the decoder may override)
DEFAULT_STEPS = 4


def ddim_timesteps(t: int, steps: int) -> list[int]:
    """Descending timesteps from t, evenly spaced, ``steps`` of them (fewer if t is small)."""
    if t <= 0 or steps <= 0:
        return []
    ts = np.round(np.linspace(t, 0, steps + 1)[:-1]).astype(int)
    return sorted({int(v) for v in ts if v > 0}, reverse=True)


def ddim(model_output, alphas_cumprod: torch.Tensor, prediction: str, y_hat: torch.Tensor, t: int,
         steps: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from ``x_t = sqrt(abar_t) * y_hat`` at step t down to 0.

    Written from ``alphas_cumprod`` because diffusers' schedulers cannot start at an arbitrary t.
    ``model_output(z, t)`` is the denoiser. The decoder runs it in float64 between model calls
    (same bytes -> same pixels); training runs the very same steps in float32 to backpropagate
    through them.
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
        z = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return z.float()


def denoise(backbone, y_hat: torch.Tensor, t: int, steps: int) -> torch.Tensor:
    """The decoder's reverse process with the backbone's denoiser and schedule."""
    return ddim(backbone.model_output, backbone.scheduler.alphas_cumprod,
                backbone.scheduler.config.prediction_type, y_hat, t, steps)
