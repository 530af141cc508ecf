"""Stage 2: the latent denoiser (UNet2DModel, epsilon prediction, DDPM/LDM noise schedule).

The codec only ever starts the reverse process from the low-noise steps that match its
quantization noise, so timesteps are drawn mostly from t <= 500 (some from the whole range to
keep the model a proper diffusion model), and half of the batches use real quantization noise
(per-channel uniform steps of the size SNR matching implies, random grid offsets) instead of
Gaussian noise: the decoder then sees what it was trained on.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from archiver.codecs.diffusion.backbones.tiny import RD_UNET_CONFIG, UNET_CONFIG, build_scheduler, build_unet
from . import data as D
from .common import Logger, ema_update, save_safetensors
from .device import autocast
from .loop import StageLoop
from .latents import (center_latent_crops, ensure_stats, is_rd, latent_cache, load_ae, random_latent_crops,
                      stride_of)
from . import rd as RD

LOW_T_MAX = 500
LOW_T_FRACTION = 0.7
QUANT_NOISE_FRACTION = 0.5
EMA_DECAY = 0.995
VAL_TIMESTEPS = (50, 150, 300)
#: a rate–distortion latent (release 3) is coded at a much higher SNR: its quantization noise
#: at the rates in use matches t of about 5..100 (``docs/training.md``)
RD_LOW_T_MAX = 150
RD_VAL_TIMESTEPS = (10, 40, 120)


def sample_timesteps(n: int, gen: np.random.Generator, T: int = 1000, low_max: int = LOW_T_MAX) -> torch.Tensor:
    low = gen.random(n) < LOW_T_FRACTION
    t = np.where(low, gen.integers(1, low_max + 1, n), gen.integers(1, T, n))
    return torch.from_numpy(t).long()


def noisy_latents(y: torch.Tensor, t: torch.Tensor, abar: torch.Tensor, steps: torch.Tensor,
                  quant: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t and the epsilon that produced it. Where ``quant`` is set the noise is the real
    quantization error of a per-channel grid with step delta_c * s, s chosen so that the noise
    variance mean(step^2)/12 equals (1 - abar)/abar, exactly how the codec picks t."""
    a = abar[t].view(-1, 1, 1, 1).float()
    eps = torch.randn_like(y)
    sigma = ((1 - a) / a).sqrt()
    step = steps.view(1, -1, 1, 1) * sigma * (12.0 ** 0.5) / steps.pow(2).mean().sqrt()
    offset = torch.rand(y.shape[0], y.shape[1], 1, 1, device=y.device) * step
    y_hat = torch.round((y - offset) / step) * step + offset
    eps_q = (y_hat - y) / sigma
    eps = torch.where(quant.view(-1, 1, 1, 1), eps_q, eps)
    x_t = a.sqrt() * y + (1 - a).sqrt() * eps
    return x_t, eps


@torch.no_grad()
def evaluate(unet, val: torch.Tensor, abar: torch.Tensor, steps: torch.Tensor, seed: int,
             timesteps=VAL_TIMESTEPS) -> dict:
    """Epsilon MSE on held-out latents with quantization noise; 1.0 = no better than not denoising."""
    unet.eval()
    res = {}
    g = torch.random.get_rng_state()
    for tv in timesteps:
        torch.manual_seed(seed + tv)
        t = torch.full((val.shape[0],), tv, dtype=torch.long, device=val.device)
        x_t, eps = noisy_latents(val, t, abar, steps, torch.ones(val.shape[0], dtype=torch.bool, device=val.device))
        res[f"val_eps_mse_t{tv}"] = float(F.mse_loss(unet(x_t, t).sample, eps))
    torch.random.set_rng_state(g)
    res["val_loss"] = float(np.mean(list(res.values())))
    unet.train()
    return res


def train_denoiser(data_dir: Path, out: Path, *, steps: int, minutes: float | None, batch: int, crop: int,
                   lr: float, seed: int, resume: bool, log: Logger, eval_every: int = 100, ckpt_every: int = 50,
                   max_files: int | None = None, n_val: int = 12, device: str = "cpu", amp: bool = True,
                   ckpt_seconds: float | None = None, log_every: int = 10) -> dict:
    from .device import configure, pick

    out.mkdir(parents=True, exist_ok=True)
    dev = pick(device)
    env = configure(dev)
    vae, ae_sha = load_ae(out)
    vae.to(dev)
    stride = stride_of(vae)
    crop = max(4, (crop // stride) - (crop // stride) % 4)  # pixels -> latent cells, a multiple of 4 for the UNet
    rd = is_rd(vae)
    # release 3 holds out the rd stage's validation images (by name) from every stage
    imgs = D.load_set(data_dir, min_side=min(stride * crop, RD.VAL_SIDE) if rd else stride * crop, max_files=max_files)
    stats = ensure_stats(out, vae, ae_sha, imgs.images, seed, log)
    sf, ch_steps = float(stats["scaling_factor"]), stats["channel_steps"].float().to(dev)
    lats = latent_cache(out, vae, ae_sha, imgs.images, sf, log)
    vae.cpu()
    if rd:
        train_ids, val_ids = D.holdout(imgs, RD.N_VAL, RD.VAL_SIDE)
        train, val_l = [lats[i] for i in train_ids], [lats[i] for i in val_ids]
        train = [z for z in train if min(z.shape[-2:]) >= crop]
    else:
        train, val_l = D.split(lats, n_val)
    vs = min(min(z.shape[-2:]) for z in val_l)
    val = center_latent_crops(val_l, min(vs - vs % 4, 32)).to(dev)
    log.log(stage="denoiser", event="data", latents=len(lats), train=len(train), val=len(val), scaling_factor=sf, **env)

    abar = build_scheduler().alphas_cumprod.to(dev)
    low_t_max, val_ts = (RD_LOW_T_MAX, RD_VAL_TIMESTEPS) if rd else (LOW_T_MAX, VAL_TIMESTEPS)
    torch.manual_seed(seed)
    base = RD_UNET_CONFIG if rd else UNET_CONFIG
    cfg = dict(base, in_channels=vae.config.latent_channels, out_channels=vae.config.latent_channels)
    unet = build_unet(cfg).to(dev)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)

    def export(ev, step):
        save_safetensors(out / "unet_best.safetensors", ema.state_dict(),
                         {"format": "archiver-tiny-unet", "unet_config": dict(ema.config), "data": imgs.info,
                          "step": step, "seed": seed, "crop_latent": crop, "batch": batch, "lr": lr,
                          "ae_sha256": ae_sha, "low_t_max": low_t_max, "device": str(dev), "low_t_fraction": LOW_T_FRACTION,
                          "quant_noise_fraction": QUANT_NOISE_FRACTION, "ema_decay": EMA_DECAY, **ev})

    def loss(gen):
        y = random_latent_crops(train, batch, crop, gen).to(dev)
        t = sample_timesteps(batch, gen, low_max=low_t_max).to(dev)
        quant = torch.from_numpy(gen.random(batch) < QUANT_NOISE_FRACTION).to(dev)
        x_t, eps = noisy_latents(y, t, abar, ch_steps, quant)
        with autocast(dev, amp):
            pred = unet(x_t, t).sample
        return F.mse_loss(pred.float(), eps), {}

    def after_step(step):
        ema_update(ema, unet, step, EMA_DECAY)
        return {}

    unet.train()
    loop = StageLoop(stage="denoiser", checkpoint=out / "denoiser.ckpt", best_file=out / "unet_best.safetensors",
                     log=log, seed=seed, lr=lr, optimizer=opt, params=list(unet.parameters()),
                     state={"model": unet, "ema": ema, "opt": opt}, loss=loss,
                     evaluate=lambda: evaluate(ema, val, abar, ch_steps, seed, val_ts), export=export, score="val_loss",
                     after_step=after_step, ae_sha256=ae_sha, eval_every=eval_every, ckpt_every=ckpt_every,
                     ckpt_seconds=ckpt_seconds, log_every=log_every)
    return {**loop.run(steps=steps, minutes=minutes, resume=resume), "data": imgs.info}
