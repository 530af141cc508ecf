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
    return (y - mu) / (steps.view(1, -1, 1, 1) * s.view(-1, 1, 1, 1))


@torch.no_grad()
def evaluate(model, val: torch.Tensor, steps: torch.Tensor) -> dict:
    """Real bits per latent element and per pixel (stride 8) through compress(), at a few s."""
    model.eval()
    model.update(force=True)
    res = {}
    for ls in VAL_LOG2_S:
        s = torch.full((1,), 2.0**ls)
        bits = 0
        for i in range(len(val)):
            u = to_u(val[i:i + 1], steps, s)
            data, u_hat = model.encode(u)
            # decodability is part of the check: a model that cannot round-trip is useless
            if i == 0 and not torch.equal(model.decode(data, tuple(u.shape)).float(), u_hat.float()):
                raise RuntimeError("entropy model does not round-trip")
            bits += 8 * len(data)
        res[f"val_bpp_s{2.0**ls:g}"] = bits / (val[:, 0].numel() * 64)
    res["val_bpp"] = float(np.mean(list(res.values())))
    return res


def train_entropy(data_dir: Path, out: Path, *, steps: int, minutes: float | None, batch: int, crop: int,
                  lr: float, seed: int, resume: bool, log: Logger, eval_every: int = 100, ckpt_every: int = 50,
                  max_files: int | None = None, n_val: int = 12) -> dict:
    from ..codec.entropy import build_entropy_model, rate_bits

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
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)

    def export(ev, step):
        save_safetensors(out / "entropy_best.safetensors", model.state_dict(),
                         {"format": "archiver-tiny-entropy", "entropy_config": cfg, "data": imgs.info,
                          "step": step, "seed": seed, "ae_sha256": ae_sha, "log2_s_range": list(LOG2_S_RANGE),
                          **ev})

    def loss(gen):
        y = random_latent_crops(train, batch, lcrop, gen)
        s = torch.from_numpy(2.0 ** gen.uniform(*LOG2_S_RANGE, batch)).float()
        o = model(to_u(y, ch_steps, s))
        return rate_bits(o["likelihoods"]) / y.numel(), {}  # bits per latent element

    def after_step(step):  # the bottleneck's quantiles have their own loss and optimizer
        aux = model.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        aux_opt.step()
        return {"aux": aux.item()}

    def evaluate_and_train():
        ev = evaluate(model, val, ch_steps)
        model.train()
        return ev

    model.train()
    loop = StageLoop(stage="entropy", checkpoint=out / "entropy.ckpt", best_file=out / "entropy_best.safetensors",
                     log=log, seed=seed, lr=lr, optimizer=opt, params=main_params,
                     state={"model": model, "opt": opt, "aux_opt": aux_opt}, loss=loss, evaluate=evaluate_and_train,
                     export=export, score="val_bpp", after_step=after_step, ae_sha256=ae_sha,
                     eval_every=eval_every, ckpt_every=ckpt_every)
    return {**loop.run(steps=steps, minutes=minutes, resume=resume), "data": imgs.info}
