"""Stage 3: the entropy model for the quantized latent (the codec's ``CheckerboardEntropyModel``,
a mean-scale hyperprior with checkerboard context; ``KIND = "hyperprior"`` trains the older
scale-only model).

It sees ``u = (y - mu_c) / (delta_c * s)`` with the trained per-channel steps ``delta_c``, the
per-crop channel mean as ``mu_c`` (the codec uses the per-image mean) and a random quality
factor ``s``, so one model serves every rate. The loss is the rate only (quantization, not the
entropy model, sets the distortion); the bottleneck's quantiles get compressai's aux loss.
Validation measures real rANS bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import data as D
from .common import Logger, save_safetensors
from .loop import StageLoop
from .latents import center_latent_crops, ensure_stats, latent_cache, load_ae, random_latent_crops

#: log2 of the quality factor s during training: covers roughly 0.05 .. 1.5 bpp
LOG2_S_RANGE = (-2.5, 3.5)
VAL_LOG2_S = (-1.0, 0.5, 2.0)
HYPER_CHANNELS = 32
KIND = "checkerboard"


def to_u(y: torch.Tensor, steps: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    mu = y.mean(dim=(2, 3), keepdim=True)
    return (y - mu) / (steps.view(1, -1, 1, 1).to(y.device) * s.view(-1, 1, 1, 1).to(y.device))


@torch.no_grad()
def evaluate(model, val: torch.Tensor, steps: torch.Tensor, log2_s=VAL_LOG2_S, stride: int = 8) -> dict:
    """Real bits per pixel through the model's ``encode`` (rANS), at a few quality factors s.
    ``model=None`` measures the generic per-block Gaussian model (nothing to train)."""
    from archiver.codecs.diffusion.entropy import generic_entropy_model

    if model is None:
        model = generic_entropy_model()
    else:
        model.eval()
        model.update(force=True)
    res = {}
    for ls in log2_s:
        s = torch.full((1,), 2.0**ls)
        bits = 0
        for i in range(len(val)):
            u = to_u(val[i:i + 1], steps, s)
            data, u_hat = model.encode(u)
            # decodability is part of the check: a model that cannot round-trip is useless
            if i == 0 and not torch.equal(model.decode(data, tuple(u.shape)).float(), u_hat.float()):
                raise RuntimeError("entropy model does not round-trip")
            bits += 8 * len(data)
        res[f"val_bpp_s{2.0**ls:g}"] = bits / (val[:, 0].numel() * stride * stride)
    res["val_bpp"] = float(np.mean(list(res.values())))
    return res


class RateObjective:
    """Training an entropy model for rate alone: bits per latent element of ``u`` (compressai's
    noisy/straight-through forward) with Adam, plus the bottleneck quantiles' aux loss on their
    own optimizer after each step. Shared by the tiny model's stage and adapters."""

    def __init__(self, model, lr: float, relative: bool = False):
        self.model, self.relative = model, relative
        self.params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
        self.opt = torch.optim.Adam(self.params, lr=lr)
        self.aux_opt = torch.optim.Adam([p for n, p in model.named_parameters() if n.endswith(".quantiles")], lr=1e-3)

    @property
    def state(self) -> dict:
        return {"model": self.model, "opt": self.opt, "aux_opt": self.aux_opt}

    def bits(self, u: torch.Tensor) -> torch.Tensor:
        """The loss: bits per latent element of the batch, or with ``relative`` the mean over
        samples of log2(bits per element + 0.01), which weighs a 10% saving at 0.03 bpp as much
        as one at 0.5 bpp (a plain mean is dominated by the high-rate samples of the batch)."""
        lk = self.model(u)["likelihoods"]
        if not self.relative:
            return sum((-torch.log2(v)).sum() for v in lk.values()) / u.numel()
        per = sum((-torch.log2(v)).flatten(1).sum(1) for v in lk.values()) / u[0].numel()
        return torch.log2(per + 0.01).mean()

    def after_step(self, step: int) -> dict:
        aux = self.model.aux_loss()
        self.aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        self.aux_opt.step()
        return {"aux": aux.item()}


def train_entropy(data_dir: Path, out: Path, *, steps: int, minutes: float | None, batch: int, crop: int,
                  lr: float, seed: int, resume: bool, log: Logger, eval_every: int = 100, ckpt_every: int = 50,
                  max_files: int | None = None, n_val: int = 12) -> dict:
    from archiver.codecs.diffusion.entropy import build_entropy_model

    out.mkdir(parents=True, exist_ok=True)
    lcrop = max(4, (crop // 8) - (crop // 8) % 4)  # pixels -> latent cells, multiple of 4
    vae, ae_sha = load_ae(out)
    imgs = D.load_set(data_dir, min_side=8 * lcrop, max_files=max_files)
    stats = ensure_stats(out, vae, ae_sha, imgs.images, seed, log)
    ch_steps = stats["channel_steps"].float()
    lats = latent_cache(out, vae, ae_sha, imgs.images, float(stats["scaling_factor"]), log)
    train, val_l = D.split(lats, n_val)
    vs = min(min(z.shape[-2:]) for z in val_l)
    val = center_latent_crops(val_l, min(vs - vs % 4, 32))
    log.log(stage="entropy", event="data", latents=len(lats), train=len(train), val=len(val))

    torch.manual_seed(seed)
    cfg = {"kind": KIND, "latent_channels": int(vae.config.latent_channels), "hyper_channels": HYPER_CHANNELS}
    model = build_entropy_model(cfg)
    rate = RateObjective(model, lr)

    def export(ev, step):
        save_safetensors(out / "entropy_best.safetensors", model.state_dict(),
                         {"format": "archiver-tiny-entropy", "entropy_config": cfg, "data": imgs.info,
                          "step": step, "seed": seed, "ae_sha256": ae_sha, "log2_s_range": list(LOG2_S_RANGE),
                          **ev})

    def loss(gen):
        y = random_latent_crops(train, batch, lcrop, gen)
        s = torch.from_numpy(2.0 ** gen.uniform(*LOG2_S_RANGE, batch)).float()
        return rate.bits(to_u(y, ch_steps, s)), {}  # bits per latent element

    def evaluate_and_train():
        ev = evaluate(model, val, ch_steps)
        model.train()
        return ev

    model.train()
    loop = StageLoop(stage="entropy", checkpoint=out / "entropy.ckpt", best_file=out / "entropy_best.safetensors",
                     log=log, seed=seed, lr=lr, optimizer=rate.opt, params=rate.params,
                     state=rate.state, loss=loss, evaluate=evaluate_and_train,
                     export=export, score="val_bpp", after_step=rate.after_step, ae_sha256=ae_sha,
                     eval_every=eval_every, ckpt_every=ckpt_every)
    return {**loop.run(steps=steps, minutes=minutes, resume=resume), "data": imgs.info}
