"""``archiver train adapter``: the codec's trained parts for a frozen diffusers model.

With the backbone frozen (Relic et al. never fine-tune it) this trains what the codec adds:

1. **Latents.** Every training image (cropped to at most ``max_side`` pixels and to a multiple of
   the stride) is encoded once by the backbone's own autoencoder, exactly as the codec encodes,
   and cached per backbone digest and data set: the rest never touches the backbone's encoder.
2. **Per-channel steps** ``delta_c``. Channel c's sensitivity ``w_c`` is the pixel MSE that
   small noise in that channel causes through the backbone's decoder; ``delta_c ~ 1/sqrt(w_c)``
   gives every channel the same share of pixel distortion, which is what a rate-distortion
   trained per-channel step converges to at high rate (the loss R + lambda * sum w_c delta_c^2
   / 12 is minimised there). They are scaled so that ``mean(delta^2)`` is the latent's
   variance: quality 50 is one step per latent standard deviation whatever the model's scaling.
3. **Entropy model.** The codec's checkerboard mean-scale hyperprior trained for rate on
   ``u = (y - mu_c) / (delta_c * s)`` with random quality factors ``s``, in the embedded
   model's training loop (``StageLoop``: resumable, seeded per step, cosine learning rate,
   best-so-far export). Validation codes held-out latents with the real rANS coder, beside the
   generic model at the same steps, so every export records its saving.

The adapter (``adapter.safetensors`` + ``adapter.json``) is written to a folder beside the model
(default ``<model>.adapter``, never inside the model folder); training state goes to its
``training/`` sub-folder. An adapter already there is first kept in ``previous/<digest>/``, so
files coded with it keep decoding.

Devices: the backbone runs as the codec runs it (fp16 on CUDA, fp32 on CPU); the entropy model
always trains in fp32 (its likelihoods underflow in half precision, so no autocast) on the
chosen device; evaluation and export use a CPU copy, as the codec does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from archiver.errors import UsageError
from . import data as D
from .common import Logger, load_checkpoint, save_checkpoint, set_threads
from .device import configure, pick
from .entropy import RateObjective, evaluate, to_u
from .latents import random_latent_crops
from .loop import StageLoop
from .pipeline import sigterm_saves

STAGE = "adapter"
#: log2 of the quality factor s seen in training: a 4-channel latent at stride 8 (SD) needs
#: finer steps than the tiny model's 8 channels for the same bpp, so the range starts lower
LOG2_S_RANGE = (-4.0, 3.5)
VAL_LOG2_S = (-2.0, 0.0, 2.0)
ENTROPY_KIND = "checkerboard"
#: a narrow starting density for the hyper-latent: a short run gains from its first steps
#: (tiny SD-layout model, 60 steps: 0.54-0.99x the generic model's bytes at each tested rate over
#: four seeds, against 1.1-4x at the lowest rate with compressai's default start)
ENTROPY_START = {"bottleneck_init_scale": 1.0}
#: train on the mean log-rate over the batch's quality factors (``RateObjective(relative=True)``):
#: with the plain mean, low-rate samples hardly count and the lowest rate stayed worse than the
#: generic model after 60 steps
RELATIVE = True


def hyper_channels_for(latent_channels: int) -> int:
    """Hyper-latent width: 4 per latent channel (16 for SD's 4), at least 8."""
    return max(8, 4 * latent_channels)
DEFAULTS = dict(steps=20_000, batch=16, crop=256, lr=1e-3, max_side=1024, eval_every=200, ckpt_every=100, n_val=12)
TRAINING_DIR = "training"


def default_out(model_dir: Path) -> Path:
    """``<model folder>.adapter``: beside the model, never inside it."""
    return model_dir.parent / (model_dir.name + ".adapter")


def check_out(out: Path, model_dir: Path) -> Path:
    out, model_dir = Path(out).resolve(), Path(model_dir).resolve()
    if out == model_dir or model_dir in out.parents:
        raise UsageError(f"{out}: the adapter goes beside the model folder, not inside it "
                         "(the model folder stays as it was downloaded)")
    return out


def _fit(a: np.ndarray, max_side: int, stride: int, gen: np.random.Generator) -> np.ndarray:
    """A crop of at most ``max_side`` a side (random position, seeded), sides a multiple of ``stride``."""
    h, w = a.shape[:2]
    ch, cw = min(h, max_side) // stride * stride, min(w, max_side) // stride * stride
    y, x = int(gen.integers(h - ch + 1)), int(gen.integers(w - cw + 1))
    return a[y:y + ch, x:x + cw]


@torch.no_grad()
def encode_latents(backbone, images: list[np.ndarray], *, max_side: int, seed: int, log: Logger) -> list[torch.Tensor]:
    """The backbone's latents of every image, as the codec computes them, on the CPU."""
    gen = np.random.default_rng(seed)
    out = []
    for i, a in enumerate(images):
        x = D.to_tensor(_fit(a, max_side, backbone.stride, gen))[None]
        out.append(backbone.encode(x.to(backbone.device)).float().cpu()[0].contiguous())
        if (i + 1) % 50 == 0:
            log.log(stage=STAGE, event="latents", done=i + 1, of=len(images))
    return out


def latent_cache(work: Path, backbone, imgs: D.ImageSet, *, max_side: int, seed: int, log: Logger) -> list[torch.Tensor]:
    """Cached per backbone, data set and crop rule: a resumed run does not encode again."""
    path = work / "latents.pt"
    key = {"backbone": backbone.weights_digest, "data": imgs.info["file_list_sha256"], "used": imgs.info["used"],
           "max_side": max_side, "seed": seed}
    ck = load_checkpoint(path)
    if ck is not None and ck.get("key") == key:
        return ck["latents"]
    lats = encode_latents(backbone, imgs.images, max_side=max_side, seed=seed, log=log)
    save_checkpoint(path, latents=lats, key=key)
    return lats


@torch.no_grad()
def channel_steps(backbone, lats: list[torch.Tensor], seed: int, n: int = 16, size: int = 32) -> dict:
    """Per-channel steps that equalise the channels' pixel distortion through the decoder."""
    gen = np.random.default_rng(seed)
    size = min(size, min(min(z.shape[-2:]) for z in lats))
    y = random_latent_crops(lats, min(n, len(lats)), size, gen)
    mean = y.mean(dim=(0, 2, 3))
    std = y.std(dim=(0, 2, 3))
    rms = float((y - mean.view(1, -1, 1, 1)).pow(2).mean().sqrt().clamp_min(1e-8))
    amp = 0.25 * rms  # small: the decoder's locally linear regime

    def decode(z):
        return torch.cat([backbone.decode(z[i:i + 4].to(backbone.device)).float().cpu() for i in range(0, len(z), 4)])

    base = decode(y)
    torch.manual_seed(seed)
    w = []
    for c in range(y.shape[1]):
        y2 = y.clone()
        y2[:, c] += amp * torch.randn_like(y2[:, c])
        w.append(float((decode(y2) - base).pow(2).mean()) / amp**2)
    w = torch.tensor(w, dtype=torch.float64)
    w = w.clamp_min(float(w.max()) * 1e-4 + 1e-30)  # a channel the decoder ignores: coarse, not infinite
    delta = 1.0 / w.sqrt()
    delta = (delta * rms / delta.pow(2).mean().sqrt()).float()
    return {"channel_steps": delta, "latent_rms": rms, "channel_std": std.tolist(), "channel_mean": mean.tolist(),
            "channel_sensitivity": w.tolist()}


def _stats(work: Path, backbone, lats, seed: int, log: Logger) -> dict:
    path = work / "quantization.pt"
    ck = load_checkpoint(path)
    if ck is not None and ck.get("backbone") == backbone.weights_digest and ck.get("n") == len(lats):
        return ck["stats"]
    st = channel_steps(backbone, lats, seed)
    save_checkpoint(path, stats=st, backbone=backbone.weights_digest, n=len(lats))
    log.log(stage=STAGE, event="quantization", latent_rms=st["latent_rms"],
            channel_steps=[round(v, 4) for v in st["channel_steps"].tolist()])
    return st


def relative_to(ev: dict, generic: dict) -> dict:
    """The adapter's bits as a fraction of the generic model's at each validation rate, their
    mean (``val_ratio``, the score: every rate counts alike) and ``saving`` = 1 - val_ratio."""
    ratios = {f"ratio_{k[len('val_bpp_'):]}": ev[k] / generic[k] for k in ev if k.startswith("val_bpp_")}
    mean = float(np.mean(list(ratios.values())))
    return {**ratios, "val_ratio": mean, "saving": 1.0 - mean, "generic_val_bpp": generic["val_bpp"]}


def settle_quantiles(model, steps: int = 400, lr: float = 5e-2) -> float:
    """Fit the bottleneck's quantiles to its current density before building the coding tables.

    The coder's range for the hyper-latent comes from those quantiles, which the aux loss moves
    slowly (lr 1e-3) while the density keeps changing: early in a run they lag behind, and real
    bits exceed the training estimate several-fold at low rates. The aux loss does not depend on
    the data, so fitting it on a copy at export time is cheap (a fraction of a second) and exact.
    """
    qs = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(qs, lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            aux = model.aux_loss()
            opt.zero_grad(set_to_none=True)
            aux.backward()
            opt.step()
    return float(model.aux_loss().detach())


def train_adapter(data_dir: Path, *, model: str, backbone_name: str = "diffusers", device: str = "auto",
                  out: Optional[Path] = None, steps: int = DEFAULTS["steps"], minutes: Optional[float] = None,
                  batch: int = DEFAULTS["batch"], crop: int = DEFAULTS["crop"], lr: float = DEFAULTS["lr"],
                  seed: int = 0, resume: bool = False, max_files: Optional[int] = None,
                  max_side: int = DEFAULTS["max_side"], eval_every: int = DEFAULTS["eval_every"],
                  ckpt_every: int = DEFAULTS["ckpt_every"], n_val: int = DEFAULTS["n_val"],
                  hyper_channels: Optional[int] = None, threads: Optional[int] = None, quiet: bool = False,
                  backbone=None) -> dict:
    """Train an adapter for the diffusers model ``model`` on the images in ``data_dir``.
    ``backbone``: that model already loaded (default: loaded from ``model`` on ``device``)."""
    from archiver.codecs.diffusion.backbones.diffusers_backbone import resolve_model_dir

    if backbone_name != "diffusers":
        raise UsageError(f"adapters are trained for diffusers models (--backbone diffusers), not {backbone_name!r}")
    for name, v in (("--steps", steps), ("--batch", batch), ("--eval-every", eval_every)):
        if v < 1:
            raise UsageError(f"{name} must be at least 1")
    dev = pick(device)
    model_dir = resolve_model_dir(model)
    if out is None:
        if not Path(model).expanduser().is_dir():
            raise UsageError("the model is a Hugging Face cache id: give the adapter folder with --out")
        out = default_out(Path(model).expanduser())
    out = check_out(out, model_dir)
    work = out / TRAINING_DIR
    work.mkdir(parents=True, exist_ok=True)
    set_threads(threads)
    with sigterm_saves():
        return _train(data_dir, model_dir=model_dir, dev=dev, out=out, work=work, steps=steps,
                      minutes=minutes, batch=batch, crop=crop, lr=lr, seed=seed, resume=resume, max_files=max_files,
                      max_side=max_side, eval_every=eval_every, ckpt_every=ckpt_every, n_val=n_val,
                      hyper_channels=hyper_channels, quiet=quiet, backbone=backbone)


def _train(data_dir, *, model_dir, dev, out, work, steps, minutes, batch, crop, lr, seed, resume, max_files,
           max_side, eval_every, ckpt_every, n_val, hyper_channels, quiet, backbone) -> dict:
    from archiver.codecs.diffusion.adapter import keep_previous, load_adapter, save_adapter
    from archiver.codecs.diffusion.backbones import get_backbone
    from archiver.codecs.diffusion.entropy import build_entropy_model

    log = Logger(work, quiet=quiet)
    kept = keep_previous(out)  # files coded with the adapter being replaced must keep decoding
    if kept is not None:
        log.log(stage=STAGE, event="kept previous adapter", path=str(kept))

    if backbone is None:
        backbone = get_backbone("diffusers", model_path=str(model_dir), device=str(dev))
    stride, c = backbone.stride, backbone.latent_channels
    lcrop = crop // stride // 4 * 4  # latent cells, a multiple of the hyper path's stride
    if lcrop < 4:
        raise UsageError(f"--crop must be at least {4 * stride} px for this model (stride {stride})")
    # images smaller than a training crop are skipped (they would shrink every crop to their size)
    imgs = D.load_set(data_dir, min_side=lcrop * stride, max_files=max_files)
    lats = latent_cache(work, backbone, imgs, max_side=max(max_side, lcrop * stride), seed=seed, log=log)
    quant = _stats(work, backbone, lats, seed, log)
    ch_steps = quant["channel_steps"]
    train, val_l = D.split(lats, n_val)
    vs = min(min(z.shape[-2:]) for z in val_l)
    val = torch.stack([z[:, (z.shape[1] - v) // 2:(z.shape[1] - v) // 2 + v, (z.shape[2] - v) // 2:(z.shape[2] - v) // 2 + v]
                       for z in val_l for v in [min(vs // 4 * 4, 32)]])
    generic = evaluate(None, val, ch_steps, VAL_LOG2_S, stride)
    log.log(stage=STAGE, event="data", images=len(lats), skipped=len(imgs.skipped), train=len(train), val=len(val),
            crop_cells=lcrop,
            device=str(dev), generic_val_bpp=generic["val_bpp"])

    log.log(stage=STAGE, event="device", **configure(dev))  # TF32 on CUDA, after the latents are cached
    torch.manual_seed(seed)
    ent_cfg = {"kind": ENTROPY_KIND, "latent_channels": c,
               "hyper_channels": hyper_channels or hyper_channels_for(c), **ENTROPY_START}
    ent = build_entropy_model(ent_cfg).to(dev)  # fp32: likelihoods underflow in half precision
    rate = RateObjective(ent, lr, relative=RELATIVE)
    steps_dev = ch_steps.to(dev)

    def loss(gen):
        y = random_latent_crops(train, batch, lcrop, gen).to(dev, non_blocking=True)
        s = torch.from_numpy(2.0 ** gen.uniform(*LOG2_S_RANGE, batch)).float().to(dev)
        return rate.bits(to_u(y, steps_dev, s)), {}

    def cpu_copy():
        m = copy.deepcopy(ent).cpu().eval()
        settle_quantiles(m)
        m.update(force=True)
        return m

    def evaluate_adapter():
        ev = evaluate(cpu_copy(), val, ch_steps, VAL_LOG2_S, stride)
        ev.update(relative_to(ev, generic))
        return ev

    def export(ev, step):
        cfg = {
            "backbone": {"id": backbone.id, "weights_sha256": backbone.weights_digest, "latent_channels": c,
                         "stride": stride, "model": str(model_dir)},
            "quantization": {"rule": "delta_c ~ 1/sqrt(decoder sensitivity), mean(delta^2) = latent variance",
                             **{k: v for k, v in quant.items() if k != "channel_steps"},
                             "channel_steps": ch_steps.tolist()},
            "entropy": ent_cfg,
            "training": {"step": step, "seed": seed, "lr": lr, "batch": batch, "crop_cells": lcrop,
                         "log2_s_range": list(LOG2_S_RANGE), "device": str(dev), "data": imgs.info,
                         "validation": ev, "generic_validation": generic},
        }
        digest = save_adapter(out, cfg, ch_steps, cpu_copy())
        log.log(stage=STAGE, event="exported", step=step, sha256=digest, val_ratio=ev["val_ratio"])

    ent.train()
    loop = StageLoop(stage=STAGE, checkpoint=work / "adapter.ckpt", best_file=out / "adapter.safetensors", log=log,
                     seed=seed, lr=lr, optimizer=rate.opt, params=rate.params, state=rate.state, loss=loss,
                     evaluate=evaluate_adapter, export=export, score="val_ratio", after_step=rate.after_step,
                     ae_sha256=backbone.weights_digest, eval_every=eval_every, ckpt_every=ckpt_every)
    res = loop.run(steps=steps, minutes=minutes, resume=resume)
    adapter = load_adapter(out)
    ev = adapter.config["training"]["validation"]  # of the exported (best) adapter
    return {**res, "adapter": str(out), "sha256": adapter.digest, "device": str(dev), "data": imgs.info,
            "val_bpp": ev["val_bpp"], "generic_val_bpp": generic["val_bpp"], "val_ratio": ev["val_ratio"],
            "saving": ev["saving"], "generic": generic, "validation": ev}
