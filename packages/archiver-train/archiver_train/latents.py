"""What the later stages need from the trained autoencoder: the latent scaling factor, the
per-channel quantization steps, and a cache of training latents (encoding once is far cheaper
than encoding every batch)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from . import data as D
from .common import Logger, read_safetensors, save_checkpoint, save_safetensors


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_ae(out: Path):
    """The best autoencoder so far, in eval mode, and the hash of its file."""
    from archiver.codecs.diffusion.backbones.tiny import build_vae

    path = Path(out) / "ae_best.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path}: train the autoencoder first (--stage ae)")
    w, meta = read_safetensors(path)
    vae = build_vae(meta["vae_config"])
    vae.load_state_dict(w)
    return vae.eval().requires_grad_(False), file_sha256(path)


def stride_of(vae) -> int:
    """The autoencoder's downsampling (its config's ``block_out_channels`` gives it, as in diffusers)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def crop_to(a: np.ndarray, stride: int) -> np.ndarray:
    """The image cropped to a multiple of ``stride``: latent cell (i, j) is then pixel block
    (stride*i, stride*j)."""
    h, w = a.shape[:2]
    return a[: h - h % stride, : w - w % stride]


def crop8(a: np.ndarray) -> np.ndarray:
    return crop_to(a, 8)


def is_rd(vae) -> bool:
    """A rate–distortion-trained autoencoder (release 3): its quantization grid is trained."""
    return getattr(vae.config, "kind", None) == "rd"


@torch.no_grad()
def compute_stats(vae, images: list[np.ndarray], seed: int, n_crops: int = 48, crop: int = 128) -> dict:
    """Scaling factor (1 / std of the latent, as Stable Diffusion's) and per-channel steps.

    A rate–distortion-trained autoencoder was trained for step 1 in its own units: that grid, in
    scaled units (``scaling_factor`` in every channel), is its channel steps. Otherwise the steps
    equalise each channel's share of pixel distortion: channel c's sensitivity w_c is
    the pixel MSE that unit-variance noise in that channel causes through the decoder, and
    delta_c ~ 1/sqrt(w_c) (so step^2 * w_c is the same in every channel), normalised to
    mean(delta^2) = 1 so that the codec's global factor s keeps its meaning.
    """
    dev = next(vae.parameters()).device
    gen = np.random.default_rng(seed)
    stride = stride_of(vae)
    crop = min(crop, min(min(a.shape[:2]) for a in images) // stride * stride)
    x = D.random_crops(images, n_crops, crop, gen).to(dev)
    ys = torch.cat([vae.encode(x[i:i + 8]).latent_dist.mean.float() for i in range(0, len(x), 8)])
    sf = 1.0 / float(ys.std())
    c = ys.shape[1]
    if is_rd(vae):
        yc = (ys * sf).cpu()
        return {"kind": "rd", "scaling_factor": sf, "channel_steps": torch.full((c,), sf),
                "channel_std": yc.std(dim=(0, 2, 3)).tolist(), "channel_mean": yc.mean(dim=(0, 2, 3)).tolist()}
    base = torch.cat([vae.decode(ys[i:i + 8]).sample for i in range(0, 16, 8)])
    amp = 0.25 / sf  # noise of std 0.25 in the scaled latent: small, locally linear regime
    torch.manual_seed(seed)
    w = []
    for ch in range(c):
        y2 = ys[:16].clone()
        y2[:, ch] += amp * torch.randn_like(y2[:, ch])
        rec = torch.cat([vae.decode(y2[i:i + 8]).sample for i in range(0, 16, 8)])
        w.append(float(((rec - base) ** 2).mean()) / (0.25**2))
    w = torch.tensor(w)
    delta = 1.0 / w.clamp_min(1e-12).sqrt()
    delta = delta / delta.pow(2).mean().sqrt()
    yc = (ys * sf).cpu()
    return {
        "scaling_factor": sf,
        "channel_steps": delta,
        "channel_std": yc.std(dim=(0, 2, 3)).tolist(),
        "channel_mean": yc.mean(dim=(0, 2, 3)).tolist(),
        "channel_sensitivity": w.tolist(),
    }


def ensure_stats(out: Path, vae, ae_sha: str, images, seed: int, log: Logger) -> dict:
    path = Path(out) / "latent_stats.safetensors"
    if path.exists():
        w, meta = read_safetensors(path)
        st = meta.get("stats", {})
        if st.get("ae_sha256") == ae_sha:
            return {**st, "channel_steps": w["channel_steps"]}
    st = compute_stats(vae, images, seed)
    meta = {k: v for k, v in st.items() if k != "channel_steps"}
    meta["ae_sha256"] = ae_sha
    meta["channel_steps_list"] = st["channel_steps"].tolist()
    save_safetensors(path, {"channel_steps": st["channel_steps"]}, {"stats": meta})
    log.log(event="latent_stats", scaling_factor=st["scaling_factor"],
            channel_steps=[round(v, 3) for v in st["channel_steps"].tolist()])
    return {**meta, "channel_steps": st["channel_steps"]}


@torch.no_grad()
def latent_cache(out: Path, vae, ae_sha: str, images: list[np.ndarray], sf: float, log: Logger) -> list[torch.Tensor]:
    """Scaled posterior means of every training image (cropped to a multiple of 8), cached on disk
    per autoencoder so a resumed or later stage does not encode again."""
    path = Path(out) / "latents.pt"
    if path.exists():
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if ck.get("ae_sha256") == ae_sha and ck.get("n") == len(images):
            return ck["latents"]
    lats = []
    dev, stride = next(vae.parameters()).device, stride_of(vae)
    for i, a in enumerate(images):
        x = D.to_tensor(crop_to(a, stride))[None].to(dev)
        lats.append((vae.encode(x).latent_dist.mean[0].float() * sf).cpu().contiguous())
        if (i + 1) % 100 == 0:
            log.log(event="latent_cache", done=i + 1, of=len(images))
    save_checkpoint(path, latents=lats, ae_sha256=ae_sha, n=len(images))
    return lats


def random_latent_crops(lats: list[torch.Tensor], n: int, size: int, gen: np.random.Generator) -> torch.Tensor:
    out = []
    for _ in range(n):
        z = lats[gen.integers(len(lats))]
        h, w = z.shape[-2:]
        y, x = gen.integers(h - size + 1), gen.integers(w - size + 1)
        c = z[:, y:y + size, x:x + size]
        if gen.random() < 0.5:
            c = c.flip(-1)
        if gen.random() < 0.5:
            c = c.flip(-2)
        out.append(c)
    return torch.stack(out)


def center_latent_crops(lats: list[torch.Tensor], size: int) -> torch.Tensor:
    out = []
    for z in lats:
        h, w = z.shape[-2:]
        y, x = (h - size) // 2, (w - size) // 2
        out.append(z[:, y:y + size, x:x + size])
    return torch.stack(out)
