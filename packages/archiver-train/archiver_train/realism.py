"""Stage ``realism`` (weights release 3): the decoder and the latent denoiser fine-tuned for
realism on the codec's own decode path, with a patch discriminator and feature matching.

An autoencoder trained for rate + MSE decodes the *mean* of the images a latent could have
come from: sharp edges, no texture (a blur, to the eye and to the spectrum). Stable Diffusion's
autoencoder, HiFiC and MS-ILLM fine-tune the decoder against a discriminator so that it draws
plausible texture instead. Here the texture is the diffusion step's job, as in the paper:

- the crop is coded exactly as the encoder codes it (``g_a``, quality factor ``s``, the trained
  entropy model's rounding around its predicted means), started at
  ``t = round(T_SCALE * t_snr)`` (SNR matching on the trained grid) and sampled with
  ``codec.sampler.ddim`` at ``ETA`` (fresh noise each step: in the decoder it is seeded from
  the stream, so decoding stays deterministic), ``DEFAULT_STEPS`` steps, then ``g_s``;
- that *diffusion decode* gets the rate–distortion stage's lambda(s)-weighted MSE plus a hinge
  adversarial loss from a spectrally normalised PatchGAN (pix2pix's 70x70, as Stable Diffusion's
  autoencoder uses) plus feature matching on the discriminator's layers (pix2pixHD), which keeps
  the generator's texture statistics close to the real crop's and steadies the game;
- the *no-diffusion decode* (``g_s`` of the dequantized latent, ``--steps 0``) keeps the MSE
  term alone, so it stays the fidelity decode and the difference between the two is what the
  diffusion step buys: the report measures it (spectral distance, PSNR cost, crops).

Gradients reach the denoiser through every DDIM step and the decoder through both paths; the
encoder, the entropy model and the rates do not move. Both trained modules are EMA'd. The score
that picks the exported weights is the diffusion decode's spectral distance on held-out crops,
penalised when its PSNR falls more than ``MAX_PSNR_COST`` dB below the starting no-diffusion
decode.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from archiver.codecs.diffusion.backbones.tiny import build_scheduler, build_unet
from archiver.codecs.diffusion.quantize import snr_timestep
from archiver.codecs.diffusion.sampler import DEFAULT_STEPS, ddim
from . import data as D
from . import device as DV
from .common import Logger, ema_update, read_safetensors, save_safetensors
from .latents import ensure_stats, load_ae
from .loop import StageLoop
from . import rd as RD
from .rd import LAMBDA, LOG2_S_RANGE, VAL_S, distortion_terms, msssim_kw

#: the decoder starts at round(T_SCALE * t_snr): 1 = the paper's SNR matching
T_SCALE = 1.0
#: sampler noise (1 = ancestral sampling from the denoiser's posterior)
ETA = 1.0
W_MSE_DIFF = 1.0  # lambda(s)-weighted MSE of the diffusion decode (the rd stage's distortion term)
W_MSE_PLAIN = 1.0  # the same for the no-diffusion decode
#: adversarial and feature-matching weights: HiFiC's ratio of adversarial to distortion terms
#: (beta = 0.15 against k_M * MSE of about the same size at these rates)
W_ADV = 0.15
W_FM = 1.0
#: steps that train the discriminator alone before the generator hears from it
DISC_WARMUP = 200
D_LR = 2e-4
EMA_DECAY = 0.99
MAX_PSNR_COST = 1.0
N_VAL_REALISM = 12


class PatchDiscriminator(nn.Module):
    """pix2pix's PatchGAN: 4x4 convolutions (``layers`` of stride 2, then one of stride 1) with
    LeakyReLU, spectral normalisation instead of batch norm (small batches, stable hinge loss).
    Returns the patch logits and every intermediate feature map (for feature matching)."""

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        blocks, c = [], 3
        for i in range(layers + 1):
            c2 = min(channels * 2**i, 512)
            blocks.append(nn.Sequential(sn(nn.Conv2d(c, c2, 4, 2 if i < layers else 1, 1)), nn.LeakyReLU(0.2)))
            c = c2
        self.blocks = nn.ModuleList(blocks)
        self.head = sn(nn.Conv2d(c, 1, 4, 1, 1))

    def forward(self, x: torch.Tensor):
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        return self.head(x), feats


class Decoding(nn.Module):
    """What this stage trains: the denoiser and the autoencoder's synthesis transform."""

    def __init__(self, unet, vae):
        super().__init__()
        self.unet, self.vae = unet, vae

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class RealismPath:
    """Crop -> the encoder's quantized latent -> (seeded-noise DDIM) -> ``g_s``, as the codec runs it."""

    def __init__(self, vae_frozen, entropy, sf: float, abar: torch.Tensor, prediction: str, dev: torch.device,
                 amp: bool, t_scale: float = T_SCALE, eta: float = ETA, steps: int = DEFAULT_STEPS):
        self.g_a, self.entropy, self.sf = vae_frozen.g_a, entropy, sf
        self.abar, self.prediction, self.dev, self.amp = abar, prediction, dev, amp
        self.t_scale, self.eta, self.steps = t_scale, eta, steps

    @torch.no_grad()
    def quantize(self, x: torch.Tensor, s: float) -> torch.Tensor:
        """The dequantized latent (unscaled units) the decoder would get at quality factor ``s``."""
        with DV.autocast(self.dev, self.amp):
            y = self.g_a(x)
        return self.entropy(y.float() / s)["u_hat"] * s

    def timestep(self, s: float) -> int:
        sigma2 = (self.sf * s) ** 2 / 12.0  # the trained grid: step s in y, s * sf in the scaled latent
        return int(round(self.t_scale * snr_timestep(self.abar.cpu(), sigma2)))

    def decode(self, model: Decoding, y_hat: torch.Tensor, s: float, diffusion: bool,
               noise=None) -> torch.Tensor:
        z = y_hat
        if diffusion:
            def out(zz, tt):
                with DV.autocast(self.dev, self.amp):
                    return model.unet(zz, tt).sample.float()

            noise = noise or (lambda i, shape: torch.randn(shape, device=self.dev))
            z = ddim(out, self.abar, self.prediction, y_hat * self.sf, self.timestep(s), self.steps,
                     dtype=torch.float32, eta=self.eta, noise=noise) / self.sf
        with DV.autocast(self.dev, self.amp):
            return model.vae.g_s(z).float()


def _mse255(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-crop MSE of [0, 1] images times 255^2 (images here are in [-1, 1])."""
    return distortion_terms(x_hat, x, msssim=False)[0]


def generator_loss(x, x_diff, x_plain, s: float, disc, adversarial: bool) -> tuple[torch.Tensor, dict]:
    lam = LAMBDA / s**2
    mse_d, mse_p = _mse255(x_diff, x).mean(), _mse255(x_plain, x).mean()
    total = lam * (W_MSE_DIFF * mse_d + W_MSE_PLAIN * mse_p)
    parts = {"psnr_diff": 10 * torch.log10(255.0**2 / mse_d.detach().clamp_min(1e-6)),
             "psnr_plain": 10 * torch.log10(255.0**2 / mse_p.detach().clamp_min(1e-6))}
    if adversarial:
        adv, fm = adversarial_terms(disc, x_diff, x)
        total = total + W_ADV * adv + W_FM * fm
        parts.update(adv=adv.detach(), fm=fm.detach())
    return total, parts


def adversarial_terms(disc, fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's hinge term and feature matching (pix2pixHD: L1 between the
    discriminator's layers on the decode and on the real crop)."""
    logits, feats = disc(fake)
    with torch.no_grad():
        _, ref = disc(real)
    adv = -logits.float().mean()
    fm = sum(F.l1_loss(f.float(), r.float()) for f, r in zip(feats, ref)) / len(feats)
    return adv, fm


def discriminator_loss(disc, x: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss."""
    real_logits, _ = disc(x)
    fake_logits, _ = disc(fake.detach())
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def discriminator_step(disc, d_opt, x: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """One optimizer step of the discriminator on the batch the generator just saw; its loss."""
    d_loss = discriminator_loss(disc, x, fake)
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    return d_loss.detach()


def _u8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def evaluate(path: RealismPath, model: Decoding, val: torch.Tensor, seed: int, psnr_floor: float | None,
             rates: tuple = VAL_S) -> dict:
    """PSNR, MS-SSIM and spectral distance of the diffusion and the no-diffusion decodes of the
    held-out crops at the quality factors ``rates`` (sampler noise seeded, as the decoder's)."""
    from pytorch_msssim import ms_ssim

    from archiver.codecs.diffusion.sampler import stream_noise
    from archiver.metrics import spectral_distance

    res, spec, psnrs = {}, [], []
    for s in rates:
        y_hat = torch.cat([path.quantize(val[i:i + 4], s) for i in range(0, len(val), 4)])
        for name, diffusion in (("diff", True), ("plain", False)):
            noise = stream_noise(seed + int(1000 * s))
            x_hat = torch.cat([path.decode(model, y_hat[i:i + 4], s, diffusion,
                                           noise=lambda k, shape: noise(k, shape).float().to(path.dev))
                               for i in range(0, len(y_hat), 4)]).clamp(-1, 1)
            p = float((10 * torch.log10(255.0**2 / _mse255(x_hat, val).clamp_min(1e-6))).mean())
            m = float(ms_ssim((x_hat + 1) / 2, (val + 1) / 2, data_range=1.0, **msssim_kw(min(val.shape[-2:]))))
            d = float(np.mean([spectral_distance(_u8(a), _u8(b)) for a, b in zip(val, x_hat)]))
            res.update({f"val_psnr_{name}_s{s:g}": p, f"val_ms_ssim_{name}_s{s:g}": m, f"val_spectral_{name}_s{s:g}": d})
            if diffusion:
                spec.append(d)
                psnrs.append(p)
    res["val_spectral"] = float(np.mean(spec))
    res["val_psnr"] = float(np.mean(psnrs))
    res["val_psnr_plain"] = float(np.mean([res[f"val_psnr_plain_s{s:g}"] for s in rates]))
    # the starting point's no-diffusion PSNR is the floor (None: this is the starting point)
    floor = res["val_psnr_plain"] if psnr_floor is None else psnr_floor
    res["val_score"] = res["val_spectral"] + 10.0 * max(0.0, floor - res["val_psnr"] - MAX_PSNR_COST)
    return res


def _load_parts(out: Path, after_realism: bool = False):
    """The rd stage's autoencoder (its hash names the encoder), the entropy model and the
    denoiser; ``after_realism``: with the realism stage's decoder and denoiser when it ran."""
    from archiver.codecs.diffusion.entropy import build_entropy_model

    vae, ae_sha = load_ae(out)
    if getattr(vae.config, "kind", None) != "rd":
        raise FileNotFoundError(f"{out}: the realism stage needs the rd stage's autoencoder (--stage rd)")
    w, meta = read_safetensors(out / "entropy_best.safetensors")
    entropy = build_entropy_model(meta["entropy_config"])
    entropy.load_state_dict(w)
    path = out / "unet_best.safetensors"
    if after_realism and (out / "unet_realism_best.safetensors").exists():
        path = out / "unet_realism_best.safetensors"
        vae.load_state_dict(read_safetensors(out / "ae_realism_best.safetensors")[0])
    if not path.exists():
        raise FileNotFoundError(f"{path}: train the denoiser first (--stage denoiser)")
    w, umeta = read_safetensors(path)
    unet = build_unet(umeta["unet_config"])
    unet.load_state_dict(w)
    return vae, ae_sha, entropy.eval().requires_grad_(False), unet, umeta


def decode_path_stage(stage: str, data_dir: Path, out: Path, *, crop: int, max_files: int | None, n_val: int,
                      device: str, amp: bool, seed: int, log: Logger, after_realism: bool = False,
                      t_scale: float = T_SCALE, eta: float = ETA):
    """What a stage that trains on the codec's decode path needs (realism, fidelity): the device,
    the models of ``out``, the training images as a bank on the device, the rd stage's held-out
    crops, and the frozen encoder's ``RealismPath`` at ``t_scale`` / ``eta``."""
    out.mkdir(parents=True, exist_ok=True)
    dev = DV.pick(device)
    env = DV.configure(dev)
    vae, ae_sha, entropy, unet, umeta = _load_parts(out, after_realism=after_realism)
    imgs = D.load_set(data_dir, min_side=min(crop, RD.VAL_SIDE), max_files=max_files)
    train_ids, val_ids = D.holdout(imgs, RD.N_VAL, RD.VAL_SIDE)  # the rd stage's held-out images
    train = [imgs.images[i] for i in train_ids]
    stats = ensure_stats(out, vae, ae_sha, train, seed, log)
    sf = float(stats["scaling_factor"])
    bank = DV.ImageBank(train, dev)
    val = D.center_crops([imgs.images[i] for i in val_ids[:n_val]], RD.VAL_SIDE).to(dev)
    log.log(stage=stage, event="data", train=len(train), val=len(val), scaling_factor=sf, **env)
    scheduler = build_scheduler()
    encoder = copy.deepcopy(vae).to(dev).eval().requires_grad_(False)  # g_a: frozen, as the encoder's
    path = RealismPath(encoder, entropy.to(dev), sf, scheduler.alphas_cumprod.to(dev),
                       scheduler.config.prediction_type, dev, amp, t_scale=t_scale, eta=eta)
    return dev, vae, ae_sha, unet, umeta, imgs, bank, val, path


def train_realism(data_dir: Path, out: Path, *, steps: int, minutes: float | None, batch: int, crop: int,
                  lr: float, seed: int, resume: bool, log: Logger, eval_every: int = 100, ckpt_every: int = 50,
                  max_files: int | None = None, device: str = "auto", amp: bool = True,
                  ckpt_seconds: float | None = 120, log_every: int = 10, n_val: int = N_VAL_REALISM) -> dict:
    dev, vae, ae_sha, unet, umeta, imgs, bank, val, path = decode_path_stage(
        "realism", data_dir, out, crop=crop, max_files=max_files, n_val=n_val, device=device, amp=amp, seed=seed,
        log=log)
    torch.manual_seed(seed)
    vae.requires_grad_(False)
    vae.g_s.requires_grad_(True)
    model = Decoding(unet.to(dev), vae.to(dev)).train()
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    disc = PatchDiscriminator().to(dev).train()
    opt = torch.optim.Adam(model.trainable(), lr=lr, betas=(0.5, 0.9))
    d_opt = torch.optim.Adam(disc.parameters(), lr=D_LR, betas=(0.5, 0.9))
    lo, hi = LOG2_S_RANGE
    batch_state: dict = {}
    hparams = {"t_scale": T_SCALE, "eta": ETA, "ddim_steps": DEFAULT_STEPS, "lambda": LAMBDA,
               "log2_s_range": list(LOG2_S_RANGE), "w_mse_diff": W_MSE_DIFF, "w_mse_plain": W_MSE_PLAIN,
               "w_adv": W_ADV, "w_fm": W_FM, "disc_warmup": DISC_WARMUP, "ema_decay": EMA_DECAY,
               "seed": seed, "crop": crop, "batch": batch, "lr": lr, "d_lr": D_LR, "device": str(dev),
               "ae_sha256": ae_sha, "initial_denoiser_step": umeta.get("step")}

    def export(ev, step):
        meta = {"format": "archiver-tiny-realism", "data": imgs.info, "step": step, **hparams, **ev}
        save_safetensors(out / "unet_realism_best.safetensors", ema.unet.state_dict(),
                         dict(meta, unet_config=dict(ema.unet.config)))
        vae_cfg = {k: v for k, v in dict(ema.vae.config).items() if not k.startswith("_")}
        save_safetensors(out / "ae_realism_best.safetensors", ema.vae.state_dict(), dict(meta, vae_config=vae_cfg))

    floor: dict = {}

    def start():  # where the decode path stands before this stage, with and without diffusion
        ev = evaluate(path, ema, val, seed, None)
        floor["psnr"] = ev["val_psnr_plain"]
        floor_file.write_text(json.dumps(floor) + "\n")
        log.log(stage="realism", step=0, event="eval", baseline="rd decoder + stage-2 denoiser", **ev)
        export(ev, 0)
        return ev["val_score"]

    def loss(gen):
        x = bank.crops(batch, crop, gen)
        s = float(2.0 ** gen.uniform(lo, hi))
        y_hat = path.quantize(x, s)
        x_diff = path.decode(model, y_hat, s, diffusion=True)
        x_plain = path.decode(model, y_hat, s, diffusion=False)
        total, parts = generator_loss(x, x_diff, x_plain, s, disc, adversarial=loop.step >= DISC_WARMUP)
        batch_state.update(x=x, fake=x_diff)
        return total, parts

    def after_step(step):  # the discriminator's own step, on the batch the generator just saw
        d_loss = discriminator_step(disc, d_opt, batch_state["x"], batch_state.pop("fake"))
        ema_update(ema, model, step, EMA_DECAY)
        return {"d_loss": d_loss}

    loop = StageLoop(stage="realism", checkpoint=out / "realism.ckpt", best_file=out / "unet_realism_best.safetensors",
                     log=log, seed=seed, lr=lr, optimizer=opt, params=model.trainable(),
                     state={"model": model, "ema": ema, "disc": disc, "opt": opt, "d_opt": d_opt}, loss=loss,
                     evaluate=lambda: evaluate(path, ema, val, seed, floor.get("psnr")), export=export,
                     score="val_score", after_step=after_step, ae_sha256=ae_sha, eval_every=eval_every,
                     ckpt_every=ckpt_every, ckpt_seconds=ckpt_seconds, log_every=log_every)
    floor_file = out / "realism_floor.json"
    if resume and floor_file.exists():  # the PSNR floor is the starting point's, kept from the first run
        floor.update(json.loads(floor_file.read_text()))
    res = loop.run(steps=steps, minutes=minutes, resume=resume, start=start)
    return {**res, "data": imgs.info}
