"""Stage ``fidelity`` (release 3 and later): the decoder and the latent denoiser fine-tuned for
MS-SSIM and MSE on the decode path the codec really runs.

Why a stage after ``realism``: the realism stage trains the decode for the paper's pure SNR
matching (``t_scale`` 1), but the shipped decode starts at 0.25x that step (chosen afterwards on
held-out images: at 1 the diffusion decode loses 0.6–2.6 dB to speckle), a path the decoder and
the denoiser never trained on; and its distortion term is MSE alone, which spends the decoder on
pixel error rather than on the structure and contrast MS-SSIM measures (release 2's decoder got
its MS-SSIM from the same kind of fine-tune, stage ``codec``). Here each crop is coded exactly
as the encoder codes it (``realism.RealismPath`` at ``T_SCALE``, the codec's seeded-noise DDIM),
and both the diffusion decode and the no-diffusion decode get

    lambda(s) * [ (1 - ALPHA) * 255^2 * MSE  +  ALPHA * K_MSSSIM * (1 - MS-SSIM) ]

where ``K_MSSSIM`` = 4.58 / 0.0035 puts the two distortions at the same rate pressure
(compressai's MS-SSIM and MSE lambdas for one quality level), so ALPHA 0.5 is an even mix.
Quality factors reach higher than the rd stage's (``LOG2_S_RANGE``): at 0.1 bpp the encoder
codes natural photos at s of 3 to 4.

The diffusion decode also keeps the realism stage's adversarial and feature-matching terms
(its ``W_ADV``, ``W_FM`` and PatchGAN, a fresh one warmed up for ``DISC_WARMUP`` steps, since
releases ship without their discriminator). Without them this loss undid the realism stage's
texture: held-out spectral distance 0.59 -> 0.74 in 150 steps (docs/training.md, release 3.1).

The encoder, the entropy model and therefore every file's bytes do not move: a model made by this
stage codes an image exactly as the model it started from did. It can start from any assembled
release (``archiver train DATA --stage fidelity --init archiver/weights``: ``export.unpack``),
since GPU runs bring back the assembled model, not its checkpoints. The exported weights are the
EMA's at the best held-out score: mean MS-SSIM of the diffusion decode, less
``SPECTRAL_WEIGHT`` x its spectral distance, penalised when its PSNR falls more than
``MAX_PSNR_COST`` dB below the starting point's.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from archiver.codecs.diffusion.sampler import DEFAULT_STEPS
from . import rd as RD
from .common import Logger, ema_update, save_safetensors
from .loop import StageLoop
from .realism import (D_LR, ETA, W_ADV, W_FM, Decoding, PatchDiscriminator, adversarial_terms, decode_path_stage,
                      discriminator_step)
from .realism import evaluate as evaluate_decodes
from .rd import LAMBDA, distortion_terms, mix

#: the starting step the shipped release decodes from (x the SNR-matched step)
T_SCALE = 0.25
ALPHA = 0.5
W_DIFF, W_PLAIN = 1.0, 1.0
#: log2 of the quality factor: up to s = 5.7 (Kodak-like photos at 0.1 bpp need s of 3-4)
LOG2_S_RANGE = (-1.0, 2.5)
VAL_S = (0.5, 1.0, 2.0, 4.0)
EMA_DECAY = 0.99
MAX_PSNR_COST = 0.3
#: score penalty per dB of PSNR lost beyond MAX_PSNR_COST (in MS-SSIM units)
PSNR_PENALTY = 0.1
N_VAL = 12
#: steps that train the (fresh) discriminator alone before the generator hears from it
DISC_WARMUP = 200
#: the score's weight on the diffusion decode's spectral distance: release 3.1's trade (+0.01
#: MS-SSIM for +0.2 spectral distance) scores as a draw, so texture cannot be sold for MS-SSIM
SPECTRAL_WEIGHT = 0.05


def distortion(x_hat: torch.Tensor, x: torch.Tensor, s: float) -> tuple[torch.Tensor, dict]:
    """The mixed distortion of one decode of a batch coded at quality factor ``s``, weighted by
    the rd stage's lambda(s), and its PSNR and MS-SSIM for the log."""
    mse, ms = distortion_terms(x_hat, x)
    total = LAMBDA / s**2 * mix(mse, ms, ALPHA).mean()
    return total, {"psnr": 10 * torch.log10(255.0**2 / mse.detach().mean().clamp_min(1e-6)), "ms_ssim": ms.detach().mean()}


def score(ev: dict, floor: float | None) -> float:
    """Lower is better: minus the diffusion decode's mean MS-SSIM, plus its spectral distance
    weighted by ``SPECTRAL_WEIGHT``, plus the PSNR penalty."""
    ms = float(np.mean([ev[f"val_ms_ssim_diff_s{s:g}"] for s in VAL_S]))
    floor = ev["val_psnr"] if floor is None else floor
    return -ms + SPECTRAL_WEIGHT * ev["val_spectral"] + PSNR_PENALTY * max(0.0, floor - ev["val_psnr"] - MAX_PSNR_COST)


def train_fidelity(data_dir: Path, out: Path, *, steps: int, minutes: float | None, batch: int, crop: int,
                   lr: float, seed: int, resume: bool, log: Logger, eval_every: int = 100, ckpt_every: int = 25,
                   max_files: int | None = None, device: str = "auto", amp: bool = True,
                   ckpt_seconds: float | None = 300, log_every: int = 5, n_val: int = N_VAL,
                   train_denoiser: bool = True) -> dict:
    dev, vae, ae_sha, unet, umeta, imgs, bank, val, path = decode_path_stage(
        "fidelity", data_dir, out, crop=crop, max_files=max_files, n_val=n_val, device=device, amp=amp, seed=seed,
        log=log, after_realism=True, t_scale=T_SCALE, eta=ETA)
    torch.manual_seed(seed)
    vae.requires_grad_(False)
    vae.g_s.requires_grad_(True)
    unet.requires_grad_(train_denoiser)
    model = Decoding(unet.to(dev), vae.to(dev)).train()
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    disc = PatchDiscriminator().to(dev).train()
    opt = torch.optim.Adam(model.trainable(), lr=lr, betas=(0.5, 0.9))
    d_opt = torch.optim.Adam(disc.parameters(), lr=D_LR, betas=(0.5, 0.9))
    batch_state: dict = {}
    lo, hi = LOG2_S_RANGE
    hparams = {"t_scale": T_SCALE, "eta": ETA, "ddim_steps": DEFAULT_STEPS, "lambda": LAMBDA, "alpha": ALPHA,
               "k_msssim": RD.K_MSSSIM, "w_diff": W_DIFF, "w_plain": W_PLAIN, "log2_s_range": list(LOG2_S_RANGE),
               "ema_decay": EMA_DECAY, "seed": seed, "crop": crop, "batch": batch, "lr": lr, "device": str(dev),
               "ae_sha256": ae_sha, "train_denoiser": train_denoiser, "val_s": list(VAL_S),
               "max_psnr_cost": MAX_PSNR_COST, "w_adv": W_ADV, "w_fm": W_FM, "disc_warmup": DISC_WARMUP,
               "d_lr": D_LR, "spectral_weight": SPECTRAL_WEIGHT, "started_from": umeta.get("unpacked_from", "unet_best.safetensors")}
    floor_file = out / "fidelity_floor.json"
    floor: dict = json.loads(floor_file.read_text()) if resume and floor_file.exists() else {}

    def evaluate():
        ev = evaluate_decodes(path, ema, val, seed, floor.get("psnr"), rates=VAL_S)
        ev["val_ms_ssim_diff"] = float(np.mean([ev[f"val_ms_ssim_diff_s{s:g}"] for s in VAL_S]))
        ev["val_ms_ssim_plain"] = float(np.mean([ev[f"val_ms_ssim_plain_s{s:g}"] for s in VAL_S]))
        ev["val_score"] = score(ev, floor.get("psnr"))
        return ev

    def export(ev, step):
        meta = {"format": "archiver-tiny-fidelity", "data": imgs.info, "step": step, **hparams, **ev}
        save_safetensors(out / "unet_fidelity_best.safetensors", ema.unet.state_dict(),
                         dict(meta, unet_config=dict(ema.unet.config)))
        vae_cfg = {k: v for k, v in dict(ema.vae.config).items() if not k.startswith("_")}
        save_safetensors(out / "ae_fidelity_best.safetensors", ema.vae.state_dict(), dict(meta, vae_config=vae_cfg))

    def start():  # the starting decode, with and without diffusion: the PSNR floor is its diffusion decode's
        ev = evaluate()
        floor["psnr"] = ev["val_psnr"]
        floor_file.write_text(json.dumps(floor) + "\n")
        ev["val_score"] = score(ev, floor["psnr"])
        log.log(stage="fidelity", step=0, event="eval", baseline="the model it starts from", **ev)
        export(ev, 0)
        return ev["val_score"]

    def loss(gen):
        x = bank.crops(batch, crop, gen)
        s = float(2.0 ** gen.uniform(lo, hi))
        y_hat = path.quantize(x, s)
        x_diff = path.decode(model, y_hat, s, diffusion=True)
        d_diff, p_diff = distortion(x_diff, x, s)
        d_plain, p_plain = distortion(path.decode(model, y_hat, s, diffusion=False), x, s)
        parts = {"s": s, **{f"{k}_diff": v for k, v in p_diff.items()}, **{f"{k}_plain": v for k, v in p_plain.items()}}
        total = W_DIFF * d_diff + W_PLAIN * d_plain
        if loop.step >= DISC_WARMUP:  # the texture terms of the realism stage, on the diffusion decode
            adv, fm = adversarial_terms(disc, x_diff, x)
            total = total + W_ADV * adv + W_FM * fm
            parts.update(adv=adv.detach(), fm=fm.detach())
        batch_state.update(x=x, fake=x_diff)
        return total, parts

    def after_step(step):  # the discriminator's own step, on the batch the generator just saw
        d_loss = discriminator_step(disc, d_opt, batch_state["x"], batch_state.pop("fake"))
        ema_update(ema, model, step, EMA_DECAY)
        return {"d_loss": d_loss}

    loop = StageLoop(stage="fidelity", checkpoint=out / "fidelity.ckpt", best_file=out / "unet_fidelity_best.safetensors",
                     log=log, seed=seed, lr=lr, optimizer=opt, params=model.trainable(),
                     state={"model": model, "ema": ema, "disc": disc, "opt": opt, "d_opt": d_opt}, loss=loss,
                     evaluate=evaluate, export=export,
                     score="val_score", after_step=after_step, ae_sha256=ae_sha, eval_every=eval_every,
                     ckpt_every=ckpt_every, ckpt_seconds=ckpt_seconds, log_every=log_every)
    res = loop.run(steps=steps, minutes=minutes, resume=resume, start=start)
    return {**res, "data": imgs.info}
