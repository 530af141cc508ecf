"""Stage ``rd`` (weights release 3): the autoencoder and its entropy model, trained jointly on
rate + lambda x distortion, as compressai trains ``mbt2018-mean``.

``y = g_a(x)`` is quantized in step units ``u = y / s`` (the codec's quality factor ``s``, no
per-channel means: the entropy model predicts them) by the codec's own
``CheckerboardEntropyModel`` (noise for the likelihoods, straight-through rounding around the
predicted means for the decoder), and ``x_hat = g_s(u_hat * s)``. Loss per crop:

    bpp + lambda(s) * 255^2 * MSE          (images in [0, 1], compressai's convention)

with ``log2 s`` drawn uniformly from ``LOG2_S_RANGE`` and ``lambda(s) = LAMBDA / s^2`` (at high
rate the distortion of a step ``s`` grows as ``s^2``, so this is where step ``s`` is the
rate–distortion optimum): one transform serves every rate the codec's rate control picks.
The bottleneck's quantiles get compressai's auxiliary loss.

Validation holds out images of ``train/`` chosen by name (``data.holdout``), codes their centre
crops at ``VAL_S`` with the real rANS coder and logs bits per pixel and PSNR against the number
of training pixels seen: the learning curves of ``docs/training.md``. Exports: the autoencoder
(``ae_best``), the entropy model (``entropy_best``) and the latent statistics (scaling factor,
the trained grid as channel steps) that the denoiser and the codec need.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from archiver.codecs.diffusion.backbones.tiny import RD_ENTROPY_CONFIG, RD_VAE_CONFIG, build_vae
from . import data as D
from . import device as DV
from .common import Logger, save_safetensors
from .latents import ensure_stats, file_sha256
from .loop import StageLoop

#: lambda at s = 1 (compressai's mbt2018 quality 2); lambda(s) = LAMBDA / s^2
LAMBDA = 0.0035
#: log2 of the quality factor during training: lambda from 4x to 1/8x LAMBDA, ~0.05 .. 0.5 bpp
LOG2_S_RANGE = (-1.0, 1.5)
VAL_S = (0.5, 1.0, 2.0)
#: validation: this many held-out images of at least VAL_SIDE px, their centre VAL_SIDE crops
N_VAL, VAL_SIDE = 24, 256
#: MS-SSIM's weight at the same rate pressure as the MSE term: compressai's lambdas for one
#: quality level (MS-SSIM 4.58 against MSE 0.0035)
K_MSSSIM = 4.58 / 0.0035
#: rd-tune of a shipped release trains the decoder too: with ``g_s`` frozen (encoder and entropy
#: model only, 500 CPU steps) the held-out MS-SSIM at equal bytes moved -0.004 / +0.002 / +0.003
#: at 0.1 / 0.2 / 0.3 bpp, against +0.016 / +0.005 / +0.005 with it (docs/training.md). The
#: texture it loses is the fidelity stage's job, which keeps the adversarial terms.
TUNE_TRAINS_DECODER = True
#: ImageNet-sample photos are JPEGs; see docs/training.md for the measurement behind 1.0
DEFAULT_SCALE: dict[str, float] = {}


def _lambda(s: torch.Tensor) -> torch.Tensor:
    return LAMBDA / s.pow(2)


def rd_forward(vae, entropy, x: torch.Tensor, s: torch.Tensor, dev: torch.device, amp: bool):
    """(x_hat, bits per crop): the training pass of one batch at per-crop quality factors ``s``."""
    with DV.autocast(dev, amp):
        y = vae.g_a(x)
    sv = s.view(-1, 1, 1, 1)
    out = entropy(y.float() / sv)  # entropy model in float32: likelihoods are CDF differences
    with DV.autocast(dev, amp):
        x_hat = vae.g_s(out["u_hat"] * sv)
    bits = sum((-torch.log2(v)).sum(dim=(1, 2, 3)) for v in out["likelihoods"].values())
    return x_hat.float(), bits


def distortion_terms(x_hat: torch.Tensor, x: torch.Tensor, msssim: bool = True):
    """Per crop of images in [-1, 1]: 255^2 x MSE of [0, 1] images (compressai's convention) and
    MS-SSIM (None unless asked for)."""
    mse = 255.0**2 / 4 * (x_hat - x).pow(2).mean(dim=(1, 2, 3))
    if not msssim:
        return mse, None
    from pytorch_msssim import ms_ssim

    ms = ms_ssim((x_hat.clamp(-1, 1) + 1) / 2, (x + 1) / 2, data_range=1.0, size_average=False,
                 **msssim_kw(min(x.shape[-2:])))
    return mse, ms


def mix(mse: torch.Tensor, ms: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """The distortion: MSE, with ``alpha`` of it replaced by ``K_MSSSIM`` x (1 - MS-SSIM)."""
    return mse if not alpha else (1 - alpha) * mse + alpha * K_MSSSIM * (1 - ms)


def msssim_kw(side: int) -> dict:
    """Five scales need sides over 160 px (the real crops); small test crops use three."""
    if side > 160:
        return {}
    return {"weights": [0.0448, 0.2856, 0.3001], "win_size": 5 if side > 64 else 3}


@torch.no_grad()
def evaluate(vae, entropy, val: torch.Tensor, alpha: float = 0.0) -> dict:
    """Real rANS bits per pixel (a CPU copy of the entropy model codes every crop; the first one
    must decode back exactly), PSNR and MS-SSIM of the decode, at each validation quality factor;
    ``val_loss`` is the stage's own loss (distortion mixed by ``alpha``) with the real bits."""
    vae.eval()
    entropy.eval()
    coder = copy.deepcopy(entropy).cpu().float()
    coder.update(force=True)
    res, losses = {}, []
    pixels = val.shape[-2] * val.shape[-1]
    y = torch.cat([vae.g_a(val[i:i + 8]).float() for i in range(0, len(val), 8)])
    for s in VAL_S:
        u = (y / s).cpu()
        bits, u_hats = [], []
        for i in range(len(u)):
            data, u_hat = coder.encode(u[i:i + 1])
            if i == 0 and not torch.equal(coder.decode(data, tuple(u[i:i + 1].shape)), u_hat):
                raise RuntimeError("entropy model does not round-trip")
            bits.append(8 * len(data))
            u_hats.append(u_hat)
        y_hat = torch.cat(u_hats).to(val.device) * s
        x_hat = torch.cat([vae.g_s(y_hat[i:i + 8]).float() for i in range(0, len(y_hat), 8)]).clamp(-1, 1)
        mse, ms = distortion_terms(x_hat, val, bool(alpha))  # MS-SSIM once, for the table and the loss
        bpp = torch.tensor(bits, dtype=torch.float64) / pixels
        psnr = 10 * torch.log10(255.0**2 / mse.clamp_min(1e-6))
        res[f"val_bpp_s{s:g}"] = float(bpp.mean())
        res[f"val_psnr_s{s:g}"] = float(psnr.mean())
        if alpha:
            res[f"val_ms_ssim_s{s:g}"] = float(ms.mean())
        dist = mix(mse, ms, alpha).double().cpu()
        losses.append(float((bpp + LAMBDA / s**2 * dist).mean()))
    res["val_loss"] = float(np.mean(losses))  # the rate–distortion loss with real bits
    vae.train()
    entropy.train()
    return res


def build_models(vae_config: dict | None = None, entropy_config: dict | None = None):
    from archiver.codecs.diffusion.entropy import build_entropy_model

    vae = build_vae(dict(vae_config or RD_VAE_CONFIG))
    cfg = dict(entropy_config or RD_ENTROPY_CONFIG, latent_channels=int(vae.config.latent_channels))
    return vae, build_entropy_model(cfg), cfg


def train_rd(data_dir: Path, out: Path, *, steps: int, minutes: float | None, batch: int, crop: int,
             lr: float, seed: int, resume: bool, log: Logger, eval_every: int = 100, ckpt_every: int = 50,
             max_files: int | None = None, n_val: int | None = None, val_side: int | None = None,
             device: str = "auto", amp: bool = True, scale: dict | None = None, ckpt_seconds: float | None = 120,
             log_every: int = 10, vae_config: dict | None = None, entropy_config: dict | None = None,
             alpha: float = 0.0, tune: bool = False, log2_s_range: tuple | None = None,
             train_decoder: bool = True) -> dict:
    """``tune``: fine-tune the autoencoder and entropy model already exported in ``out`` (stage
    ``rd-tune``: its own checkpoint, ``alpha`` of the distortion on MS-SSIM) instead of training
    them from scratch. ``train_decoder`` False keeps ``g_s`` as it is: only the encoder and the
    entropy model learn (a realism-trained decoder keeps its texture; see ``TUNE_TRAINS_DECODER``)."""
    out.mkdir(parents=True, exist_ok=True)
    stage = "rd-tune" if tune else "rd"
    n_val, val_side = n_val or N_VAL, val_side or VAL_SIDE
    dev = DV.pick(device)
    env = DV.configure(dev)
    imgs = D.load_set(data_dir, min_side=min(crop, val_side), max_files=max_files,
                      scale=DEFAULT_SCALE if scale is None else scale)
    train_ids, val_ids = D.holdout(imgs, n_val, val_side)
    train = [imgs.images[i] for i in train_ids]
    val_names = [imgs.names[i] for i in val_ids]
    bank = DV.ImageBank(train, dev)
    val = D.center_crops([imgs.images[i] for i in val_ids], val_side).to(dev)
    log.log(stage=stage, event="data", **imgs.info, train=len(train), val=len(val), val_side=val_side,
            val_names=val_names, skipped=len(imgs.skipped), **env)

    torch.manual_seed(seed)
    if tune:
        from .common import read_safetensors
        from .latents import load_ae

        vae, start_sha = load_ae(out)
        vae.requires_grad_(True)
        w, meta = read_safetensors(out / "entropy_best.safetensors")
        _, entropy, ent_cfg = build_models(dict(vae.config), meta["entropy_config"])
        entropy.load_state_dict(w)
    else:
        vae, entropy, ent_cfg = build_models(vae_config, entropy_config)
    vae.to(dev).train()
    entropy.to(dev).train()
    if dev.type == "cuda":
        vae.to(memory_format=torch.channels_last)
    if not train_decoder:
        vae.g_s.requires_grad_(False)
    main_params = [p for p in vae.parameters() if p.requires_grad]
    main_params += [p for n, p in entropy.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in entropy.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    lo, hi = log2_s_range or LOG2_S_RANGE
    hparams = {"seed": seed, "crop": crop, "batch": batch, "lr": lr, "lambda": LAMBDA, "log2_s_range": [lo, hi],
               "amp_bf16": bool(amp and dev.type == "cuda"), "device": str(dev), "val_names": val_names,
               "msssim_alpha": alpha, "k_msssim": K_MSSSIM if alpha else None, "train_decoder": train_decoder}
    if tune:
        hparams["tuned_from_ae_sha256"] = start_sha

    def export(ev, step):
        ae_path = out / "ae_best.safetensors"
        vae_cfg = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
        meta = {"data": imgs.info, "step": step, "pixels": step * batch * crop * crop, **hparams, **ev}
        save_safetensors(ae_path, vae.state_dict(), {"format": "archiver-tiny-vae", "vae_config": vae_cfg, **meta})
        save_safetensors(out / "entropy_best.safetensors", entropy.state_dict(),
                         {"format": "archiver-tiny-entropy", "entropy_config": ent_cfg, "trained_jointly": True,
                          "ae_sha256": file_sha256(ae_path), **meta})
        ensure_stats(out, vae, file_sha256(ae_path), train, seed, log)  # scaling factor, the trained grid

    def loss(gen):
        x = bank.crops(batch, crop, gen)
        s = torch.from_numpy(2.0 ** gen.uniform(lo, hi, batch)).float().to(dev)
        x_hat, bits = rd_forward(vae, entropy, x, s, dev, amp)
        bpp = bits / (crop * crop)
        mse, ms = distortion_terms(x_hat, x, bool(alpha))
        total = (bpp + _lambda(s) * mix(mse, ms, alpha)).mean()
        psnr = 10 * torch.log10(255.0**2 / mse.detach().clamp_min(1e-10)).mean()
        return total, {"bpp": bpp.detach().mean(), "psnr": psnr}

    def after_step(step):  # the bottleneck's quantiles have their own loss and optimizer
        aux = entropy.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        aux_opt.step()
        return {"aux": aux.detach()}

    def start():  # the untrained point: the first point of the learning curves
        ev = evaluate(vae, entropy, val, alpha)
        log.log(stage=stage, step=0, event="eval", pixels=0, **ev)
        export(ev, 0)
        return ev["val_loss"]

    loop = StageLoop(stage=stage, checkpoint=out / f"{stage}.ckpt", best_file=out / "ae_best.safetensors", log=log,
                     seed=seed, lr=lr, optimizer=opt, params=main_params,
                     state={"vae": vae, "entropy": entropy, "opt": opt, "aux_opt": aux_opt}, loss=loss,
                     evaluate=lambda: evaluate(vae, entropy, val, alpha), export=export, score="val_loss",
                     after_step=after_step, eval_every=eval_every, ckpt_every=ckpt_every,
                     ckpt_seconds=ckpt_seconds, log_every=log_every,
                     progress=lambda step: {"pixels": step * batch * crop * crop})
    res = loop.run(steps=steps, minutes=minutes, resume=resume, start=start)
    return {**res, "pixels": loop.step * batch * crop * crop, "data": imgs.info}
