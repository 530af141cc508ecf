"""Stage 1: the autoencoder. Random crops, L1 + (1 - MS-SSIM) + an L1 on image gradients (so
texture and edges are not traded for blur) + a small KL term (as in Stable Diffusion's VAE,
keeping the latent well-behaved for the diffusion stage)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from archiver.codecs.diffusion.backbones.tiny import VAE_CONFIG, build_vae
from . import data as D
from .common import Logger, save_safetensors
from .loop import StageLoop

#: MS-SSIM over 3 scales (5 need crops > 160 px); the standard first three weights, renormalised
MSSSIM_WEIGHTS = [0.0448, 0.2856, 0.3001]
KL_WEIGHT = 1e-6
GRAD_WEIGHT = 0.5
MSSSIM_WEIGHT = 0.5


def grad_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def ae_loss(vae, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict]:
    from pytorch_msssim import ms_ssim

    post = vae.encode(x).latent_dist
    z = post.sample() if sample else post.mode()
    xh = vae.decode(z).sample
    l1 = (xh - x).abs().mean()
    w = torch.tensor(MSSSIM_WEIGHTS) / sum(MSSSIM_WEIGHTS)
    ms = ms_ssim((xh.clamp(-1, 1) + 1) / 2, (x + 1) / 2, data_range=1.0, weights=w.tolist(), win_size=5)
    g = grad_l1(xh, x)
    # KL summed over latent elements, per image pixel (SD's normalisation, relative to a per-pixel L1)
    kl = post.kl().sum() / x[:, 0].numel()
    loss = l1 + MSSSIM_WEIGHT * (1 - ms) + GRAD_WEIGHT * g + KL_WEIGHT * kl
    return loss, {"l1": l1.item(), "ms_ssim": ms.item(), "grad": g.item(), "kl": kl.item()}


@torch.no_grad()
def evaluate(vae, val: torch.Tensor) -> dict:
    vae.eval()
    z = vae.encode(val).latent_dist.mode()
    xh = vae.decode(z).sample.clamp(-1, 1)
    vae.train()
    mse = F.mse_loss((xh + 1) * 127.5, (val + 1) * 127.5, reduction="none").mean(dim=(1, 2, 3))
    psnr = float((10 * torch.log10(255.0**2 / mse.clamp_min(1e-6))).mean())
    return {"val_psnr": psnr}


def vae_metadata(vae, info: dict, extra: dict) -> dict:
    return {"format": "archiver-tiny-vae", "vae_config": dict(vae.config), "data": info, **extra}


def train_ae(data_dir: Path, out: Path, *, steps: int, minutes: float | None, batch: int, crop: int,
             lr: float, seed: int, resume: bool, log: Logger, eval_every: int = 100, ckpt_every: int = 50,
             max_files: int | None = None, n_val: int = 12) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    imgs = D.load_set(data_dir, min_side=crop, max_files=max_files)
    train, val_imgs = D.split(imgs.images, n_val)
    vsize = min(min(a.shape[:2]) for a in val_imgs)
    vsize = min(vsize - vsize % 16, 256)
    val = D.center_crops(val_imgs, vsize)
    log.log(stage="ae", event="data", **imgs.info, train=len(train), val=len(val), val_size=vsize, skipped=len(imgs.skipped))

    torch.manual_seed(seed)
    vae = build_vae(dict(VAE_CONFIG))
    if hasattr(vae, "init_from_blocks"):  # block transform: start from the PCA of training blocks
        blocks = D.random_crops(train, 256, min(64, crop - crop % 8), np.random.default_rng(seed))
        vae.init_from_blocks(torch.nn.PixelUnshuffle(8)(blocks).permute(0, 2, 3, 1).reshape(-1, 192))
    opt = torch.optim.Adam(vae.parameters(), lr=lr)

    def export_best(ev, step):
        save_safetensors(out / "ae_best.safetensors", vae.state_dict(),
                         vae_metadata(vae, imgs.info, {"step": step, "val_psnr": ev["val_psnr"], "seed": seed,
                                      "crop": crop, "batch": batch, "lr": lr}))

    def start():  # the starting point (PCA for the block transform) is the first best-so-far
        ev = evaluate(vae, val)
        log.log(stage="ae", step=0, event="eval", **ev)
        export_best(ev, 0)
        return ev["val_psnr"]

    def loss(gen):
        return ae_loss(vae, D.random_crops(train, batch, crop, gen))

    vae.train()
    loop = StageLoop(stage="ae", checkpoint=out / "ae.ckpt", best_file=out / "ae_best.safetensors", log=log,
                     seed=seed, lr=lr, optimizer=opt, params=list(vae.parameters()), state={"model": vae, "opt": opt},
                     loss=loss, evaluate=lambda: evaluate(vae, val), export=export_best, score="val_psnr",
                     higher_is_better=True, eval_every=eval_every, ckpt_every=ckpt_every)
    return {**loop.run(steps=steps, minutes=minutes, resume=resume, start=start), "data": imgs.info}
