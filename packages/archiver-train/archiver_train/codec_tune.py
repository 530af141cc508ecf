"""Stage 4: fine-tune the denoiser and the autoencoder's decoder on the codec's own decode path.

The denoiser from stage 2 learned the standard diffusion objective on Gaussian noise. What the
decoder really hands it is different: a latent quantized with per-channel uniform steps, set to
the timestep that SNR matching picks, then a few deterministic DDIM steps and the autoencoder
decoder. This stage runs exactly that path (``codec.sampler.ddim``, the function the decoder
calls) on random training crops at quality factors spanning the rates people use, and
backpropagates L1 + (1 - MS-SSIM) against the *original* crop through the decoder and every
DDIM step. A term on the radially averaged log power spectrum exists (``SPECTRUM_WEIGHT``) but
is off: the decoder met it with a periodic dot grid at the block corners (docs/training.md).

The decoder learns with it because it was trained on clean latents only: fed coarsely
quantized ones it draws 8x8 block edges and colour fringes that no latent-space denoiser can
undo. The encoder, the latents, the quantization steps and the entropy model stay as they are,
so the rate side is untouched. The results replace the stage-2 denoiser and the stage-1 decoder
in the assembled model, with the timestep rule they were trained for (``t_scale``).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch

from archiver.codecs.diffusion.backbones.tiny import build_scheduler, build_unet
from archiver.codecs.diffusion.sampler import DEFAULT_STEPS, ddim
from archiver.codecs.diffusion.quantize import snr_timestep
from . import data as D
from .common import Logger, ema_update, read_safetensors, save_safetensors
from .loop import StageLoop
from .latents import crop8, ensure_stats, latent_cache, load_ae

#: quality factors s drawn log-uniformly from this range: about 0.05 to 0.4 bpp with the shipped model
S_RANGE = (0.35, 6.0)
#: validation quality factors (about 0.3, 0.2 and 0.07 bpp)
VAL_S = (0.5, 1.41421, 4.0)
#: the timestep rule trained for: t = round(T_SCALE * SNR-matched t), as the encoder computes it
T_SCALE = 0.25
MSSSIM_WEIGHT = 1.0
#: off: with it the decoder learned a dot grid at block corners that games the statistic
SPECTRUM_WEIGHT = 0.0
#: weight of the same fidelity loss (no spectrum term) on the no-diffusion decode of the batch:
#: the decoder then serves ``--steps 0`` as a fidelity decode, and realism is the diffusion's job
NODIFF_WEIGHT = 0.0
EMA_DECAY = 0.99
#: a deeper full-resolution head added to the block autoencoder's decoder for this stage
#: (``block_ae.BlockAutoencoder``'s deblock_*; None keeps the decoder's architecture)
DEBLOCK: dict | None = None
MSSSIM_WEIGHTS = [0.0448, 0.2856, 0.3001]  # three scales: 128-px crops are too small for five
LUMA = (0.299, 0.587, 0.114)


class LogSpectrum:
    """Differentiable radially averaged log10 power spectrum of the luma, the same statistic as
    ``metrics.radial_power_spectrum`` (Hann window, mean removed), for square crops of one size."""

    def __init__(self, size: int, bins: int):
        self.size, self.bins = size, bins
        w = torch.hann_window(size, periodic=False, dtype=torch.float64)
        self.window = (w[:, None] * w[None, :]).float()
        f = torch.fft.fftfreq(size, dtype=torch.float64)
        r = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
        idx = torch.clamp((r / 0.5 * bins).long(), max=bins)
        self.idx = idx.flatten()
        self.counts = torch.bincount(self.idx, minlength=bins + 1).clamp_min(1).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        luma = sum(c * x[:, i] for i, c in enumerate(LUMA)) * 127.5
        luma = (luma - luma.mean(dim=(-2, -1), keepdim=True)) * self.window
        p = torch.fft.fft2(luma).abs().pow(2).flatten(1)
        sums = torch.zeros(x.shape[0], self.bins + 1).index_add_(1, self.idx, p)
        return torch.log10(sums / self.counts + 1e-8)[:, : self.bins]


def quantize_like_codec(y: torch.Tensor, mu: torch.Tensor, ch_steps: torch.Tensor, s: float, entropy=None):
    """y_hat as the decoder reconstructs it, and the noise variance that sets its timestep.

    The entropy model owns the last rounding (a mean-predicting model rounds around its means),
    so with one the crop goes through its deterministic (eval-mode) quantization; without one,
    plain rounding in step units, as ``codec.quantize``.
    """
    step = (ch_steps.float() * s).view(1, -1, 1, 1)
    u = (y - mu) / step
    if entropy is None:
        u_hat = torch.round(u)
    else:
        with torch.no_grad():
            u_hat = entropy(u)["u_hat"]
    sigma2 = float(step.pow(2).mean()) / 12.0
    return u_hat * step + mu, sigma2


class Decoding(torch.nn.Module):
    """What this stage trains: the denoiser and the autoencoder (only its decoder gets gradients)."""

    def __init__(self, unet, vae):
        super().__init__()
        self.unet, self.vae = unet, vae

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def decoder_parameters(vae) -> list[torch.nn.Parameter]:
    """Everything ``vae.decode`` uses (the block autoencoder's synthesis, context net and refine
    head; a conv AutoencoderKL's decoder and post-quant conv)."""
    names = ("synthesis", "dec_ctx", "refine", "deblock", "decoder", "post_quant_conv")
    return [p for n in names if getattr(vae, n, None) is not None for p in getattr(vae, n).parameters()]


class CodecPath:
    """quantized latent -> DDIM with the denoiser -> autoencoder decoder -> pixels."""

    def __init__(self, abar: torch.Tensor, prediction: str, sf: float, steps: int, t_scale: float):
        self.abar, self.prediction, self.sf = abar, prediction, sf
        self.steps, self.t_scale = steps, t_scale

    def timestep(self, sigma2: float) -> int:
        return int(round(self.t_scale * snr_timestep(self.abar, sigma2)))

    def __call__(self, model: Decoding, y_hat: torch.Tensor, sigma2: float, diffusion: bool = True) -> torch.Tensor:
        z = y_hat
        if diffusion:
            t = self.timestep(sigma2)
            z = ddim(lambda zz, tt: model.unet(zz, tt).sample, self.abar, self.prediction, y_hat, t, self.steps,
                     dtype=torch.float32)
        return model.vae.decode(z / self.sf).sample


def fidelity_loss(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L1 + (1 - MS-SSIM), and its two parts."""
    from pytorch_msssim import ms_ssim

    l1 = (x_hat - x).abs().mean()
    w = (torch.tensor(MSSSIM_WEIGHTS) / sum(MSSSIM_WEIGHTS)).tolist()
    win = 5 if min(x.shape[-2:]) > 64 else 3  # pytorch_msssim wants sides over (win - 1) * 16
    ms = ms_ssim((x_hat.clamp(-1, 1) + 1) / 2, (x + 1) / 2, data_range=1.0, weights=w, win_size=win)
    return l1 + MSSSIM_WEIGHT * (1 - ms), l1, ms


def codec_loss(x_hat: torch.Tensor, x: torch.Tensor, spectrum: LogSpectrum) -> tuple[torch.Tensor, dict]:
    """The diffusion decode's loss: fidelity plus the log-spectrum term."""
    fid, l1, ms = fidelity_loss(x_hat, x)
    spec = (spectrum(x_hat) - spectrum(x)).pow(2).mean()
    loss = fid + SPECTRUM_WEIGHT * spec
    return loss, {"l1": l1.item(), "ms_ssim": ms.item(), "spectrum": spec.item()}


def _aligned_crop(img: np.ndarray, lat: torch.Tensor, i: int, j: int, size: int):
    """Latents are of the image cropped to a multiple of 8, so latent cell (i, j) is pixel block
    (8i, 8j): the (latent, pixel) pair of one square crop."""
    return lat[:, i:i + size, j:j + size], D.to_tensor(img[8 * i:8 * (i + size), 8 * j:8 * (j + size)])


def _crops(pairs, mus, n: int, size: int, gen: np.random.Generator):
    """Random aligned crops and their images' channel means. No flips: a flipped latent is not
    what the encoder makes."""
    ys, xs, ms = [], [], []
    for _ in range(n):
        k = int(gen.integers(len(pairs)))
        img, lat = pairs[k]
        h, w = lat.shape[-2:]
        y, x = _aligned_crop(img, lat, int(gen.integers(h - size + 1)), int(gen.integers(w - size + 1)), size)
        ys.append(y)
        xs.append(x)
        ms.append(mus[k])
    return torch.stack(ys), torch.stack(xs), torch.stack(ms).view(n, -1, 1, 1)


def _center_crops(pairs, size: int):
    """Centre crops of every pair and their images' channel means (the validation set)."""
    crops = [_aligned_crop(img, lat, (lat.shape[1] - size) // 2, (lat.shape[2] - size) // 2, size)
             for img, lat in pairs]
    mus = torch.stack([lat.mean(dim=(1, 2)) for _, lat in pairs]).view(len(pairs), -1, 1, 1)
    return torch.stack([y for y, _ in crops]), torch.stack([x for _, x in crops]), mus


@torch.no_grad()
def evaluate(path: CodecPath, model: Decoding, val, ch_steps, spectrum: LogSpectrum, diffusion: bool = True,
             entropy=None) -> dict:
    """Mean loss, MS-SSIM and PSNR of the full decode on held-out crops at the validation rates."""
    from pytorch_msssim import ms_ssim

    y, x, mu = val
    res, losses = {}, []
    for s in VAL_S:
        y_hat, sigma2 = quantize_like_codec(y, mu, ch_steps, s, entropy)
        x_hat = path(model, y_hat, sigma2, diffusion=diffusion).clamp(-1, 1)
        loss, parts = codec_loss(x_hat, x, spectrum)
        losses.append(loss.item())
        mse = ((x_hat - x) * 127.5).pow(2).mean(dim=(1, 2, 3))
        # five scales need crops over 160 px (the real validation crops); tiny test sets use three
        side = min(x.shape[-2:])
        kw = {} if side > 160 else {"weights": MSSSIM_WEIGHTS, "win_size": 5 if side > 64 else 3}
        res[f"val_ms_ssim_s{s:g}"] = float(ms_ssim((x_hat + 1) / 2, (x + 1) / 2, data_range=1.0, **kw))
        res[f"val_psnr_s{s:g}"] = float((10 * torch.log10(255.0**2 / mse.clamp_min(1e-6))).mean())
        res[f"val_spectrum_s{s:g}"] = parts["spectrum"]
    res["val_loss"] = float(np.mean(losses))
    return res


def with_deblock(vae):
    """The autoencoder with ``DEBLOCK``'s extra head (zero-initialised: same output until trained)."""
    from archiver.codecs.diffusion.backbones.tiny import build_vae

    cfg = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    if not DEBLOCK or cfg.get("kind") != "block" or cfg.get("deblock_channels"):
        return vae
    bigger = build_vae({**cfg, **DEBLOCK})
    missing, unexpected = bigger.load_state_dict(vae.state_dict(), strict=False)
    if unexpected or any(not k.startswith("deblock.") for k in missing):
        raise RuntimeError(f"cannot extend the autoencoder: missing {missing}, unexpected {unexpected}")
    return bigger.eval().requires_grad_(False)


def _entropy_model(out: Path):
    """The trained entropy model in eval mode (it decides how the latent is rounded), or None."""
    from archiver.codecs.diffusion.entropy import build_entropy_model

    path = out / "entropy_best.safetensors"
    if not path.exists():
        return None
    w, meta = read_safetensors(path)
    model = build_entropy_model(meta["entropy_config"])
    model.load_state_dict(w)
    return model.eval().requires_grad_(False)


def _initial_unet(out: Path):
    """The stage-2 denoiser (its EMA weights) this stage starts from."""
    path = out / "unet_best.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path}: train the denoiser first (--stage denoiser)")
    w, meta = read_safetensors(path)
    unet = build_unet(meta["unet_config"])
    unet.load_state_dict(w)
    return unet, meta


def train_codec(data_dir: Path, out: Path, *, steps: int, minutes: float | None, batch: int, crop: int,
                lr: float, seed: int, resume: bool, log: Logger, eval_every: int = 100, ckpt_every: int = 50,
                max_files: int | None = None, n_val: int = 12, val_crop: int = 256) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    size = max(4, (crop // 8) - (crop // 8) % 4)  # latent cells, a multiple of 4 for the UNet
    vae, ae_sha = load_ae(out)
    imgs = D.load_set(data_dir, min_side=8 * size, max_files=max_files)
    stats = ensure_stats(out, vae, ae_sha, imgs.images, seed, log)
    sf, ch_steps = float(stats["scaling_factor"]), stats["channel_steps"].float()
    lats = latent_cache(out, vae, ae_sha, imgs.images, sf, log)
    pairs = [(crop8(a), z) for a, z in zip(imgs.images, lats)]
    train, val_pairs = D.split(pairs, n_val)
    mus = [z.mean(dim=(1, 2)) for _, z in train]
    vs = min(min(z.shape[-2:]) for _, z in val_pairs)
    vs = max(4, min(vs - vs % 4, val_crop // 8))
    val = _center_crops(val_pairs, vs)
    spectrum, val_spectrum = LogSpectrum(8 * size, 4 * size), LogSpectrum(8 * vs, 4 * vs)
    log.log(stage="codec", event="data", train=len(train), val=len(val_pairs), crop_latent=size, val_crop_latent=vs)

    scheduler = build_scheduler()
    path = CodecPath(scheduler.alphas_cumprod, scheduler.config.prediction_type, sf, DEFAULT_STEPS, T_SCALE)
    entropy = _entropy_model(out)
    entropy_kind = "rounding" if entropy is None else type(entropy).__name__
    torch.manual_seed(seed)
    unet, unet_meta = _initial_unet(out)
    vae = with_deblock(vae)
    for p in decoder_parameters(vae):
        p.requires_grad_(True)
    model = Decoding(unet, vae)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.AdamW(model.trainable(), lr=lr, weight_decay=1e-4)

    def export(ev, step):
        meta = {"format": "archiver-tiny-codec", "data": imgs.info, "finetuned_on": "codec decode path",
                "step": step, "seed": seed, "crop_latent": size, "batch": batch, "lr": lr, "ae_sha256": ae_sha,
                "t_scale": T_SCALE, "ddim_steps": DEFAULT_STEPS, "entropy_model": entropy_kind,
                "s_range": list(S_RANGE), "msssim_weight": MSSSIM_WEIGHT, "spectrum_weight": SPECTRUM_WEIGHT,
                "nodiff_weight": NODIFF_WEIGHT, "ema_decay": EMA_DECAY, "deblock": DEBLOCK,
                "initial_denoiser_step": unet_meta.get("step"), **ev}
        save_safetensors(out / "unet_codec_best.safetensors", ema.unet.state_dict(),
                         dict(meta, unet_config=dict(ema.unet.config)))
        save_safetensors(out / "ae_codec_best.safetensors", ema.vae.state_dict(),
                         dict(meta, vae_config=dict(ema.vae.config)))

    def start():  # where the decoder stands before this stage: without and with the stage-2 denoiser
        base = evaluate(path, ema, val, ch_steps, val_spectrum, diffusion=False, entropy=entropy)
        first = evaluate(path, ema, val, ch_steps, val_spectrum, entropy=entropy)
        log.log(stage="codec", step=0, event="eval", baseline="no diffusion", **base)
        log.log(stage="codec", step=0, event="eval", baseline="stage-2 denoiser", **first)
        export(first, 0)
        return first["val_loss"]

    lo, hi = math.log(S_RANGE[0]), math.log(S_RANGE[1])

    def loss(gen):
        y, x, mu = _crops(train, mus, batch, size, gen)
        y_hat, sigma2 = quantize_like_codec(y, mu, ch_steps, math.exp(gen.uniform(lo, hi)), entropy)
        total, parts = codec_loss(path(model, y_hat, sigma2), x, spectrum)
        if NODIFF_WEIGHT:
            plain, _, ms_plain = fidelity_loss(path(model, y_hat, sigma2, diffusion=False), x)
            total = total + NODIFF_WEIGHT * plain
            parts["ms_ssim_nodiff"] = ms_plain.item()
        return total, parts

    def after_step(step):
        ema_update(ema, model, step, EMA_DECAY)
        return {}

    model.train()
    model.vae.eval()  # no dropout or norm statistics in it; only its decoder's weights move
    loop = StageLoop(stage="codec", checkpoint=out / "codec.ckpt", best_file=out / "unet_codec_best.safetensors",
                     log=log, seed=seed, lr=lr, optimizer=opt, params=model.trainable(),
                     state={"model": model, "ema": ema, "opt": opt}, loss=loss,
                     evaluate=lambda: evaluate(path, ema, val, ch_steps, val_spectrum, entropy=entropy),
                     export=export, score="val_loss", after_step=after_step, ae_sha256=ae_sha,
                     eval_every=eval_every, ckpt_every=ckpt_every)
    return {**loop.run(steps=steps, minutes=minutes, resume=resume, start=start), "data": imgs.info}
