"""Tiny randomly initialised diffusers models in Stable Diffusion layout, for tests.

They are saved with ``save_pretrained`` so that the very code path that loads SD 2.1 from disk
(``DiffusersBackbone.from_pretrained``) is what the tests exercise. Built once per process.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image


def _tokenizer_files(d: Path) -> None:
    """A CLIP BPE tokenizer needs vocab.json + merges.txt: a handful of tokens is enough."""
    d.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>", "a</w>", "b</w>", "c</w>", "a", "b", "c", "ab</w>"]
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (d / "merges.txt").write_text("#version: 0.2\na b</w>\n")


def build_tiny_sd(root: str | Path, *, conditional: bool = True, prediction_type: str = "epsilon",
                  seed: int = 0, vae_kind: str = "kl") -> Path:
    """Write a tiny SD-architecture model (stride-8 VAE, 4 latent channels) into ``root``;
    ``vae_kind="tiny"`` uses a TAESD-style AutoencoderTiny instead of AutoencoderKL."""
    from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, UNet2DConditionModel, UNet2DModel  # heavy: diffusers, optional and slow to import

    root = Path(root)
    torch.manual_seed(seed)
    if vae_kind == "tiny":
        vae = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                              latent_channels=4, num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))
    else:
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4, layers_per_block=1,
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
            block_out_channels=[4, 8, 8, 8], scaling_factor=0.18215,
        )
    if conditional:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # heavy: transformers, optional and slow to import

        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=4,
            block_out_channels=[8, 16], cross_attention_dim=16, attention_head_dim=2,
            down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        )
        text = CLIPTextModel(CLIPTextConfig(
            vocab_size=9, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1))
        text.save_pretrained(root / "text_encoder", safe_serialization=True)
        with tempfile.TemporaryDirectory(prefix="archiver-tok-") as tmp:
            src = Path(tmp)
            _tokenizer_files(src)
            tok = CLIPTokenizer(str(src / "vocab.json"), str(src / "merges.txt"),
                                model_max_length=8, pad_token="<|endoftext|>")
            tok.save_pretrained(root / "tokenizer")
    else:
        unet = UNet2DModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=4,
            block_out_channels=[8, 16], down_block_types=["DownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "UpBlock2D"], add_attention=False,
        )
    vae.save_pretrained(root / "vae", safe_serialization=True)
    unet.save_pretrained(root / "unet", safe_serialization=True)
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  set_alpha_to_one=False, prediction_type=prediction_type).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return root


@functools.lru_cache(maxsize=None)
def _process_dir() -> Path:
    """One temporary folder per process for the cached models, removed when the process exits
    (only by the process that made it: a forked child exiting must not delete its parent's)."""
    root = Path(tempfile.mkdtemp(prefix="archiver-tiny-sd-"))
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(root, ignore_errors=True)

    atexit.register(remove)
    return root


@functools.lru_cache(maxsize=None)
def tiny_sd_dir(conditional: bool = True, prediction_type: str = "epsilon", vae_kind: str = "kl") -> Path:
    """A per-process cached tiny model directory (built on first use, removed at exit)."""
    name = f"{'cond' if conditional else 'uncond'}-{prediction_type}-{vae_kind}"
    return build_tiny_sd(_process_dir() / name, conditional=conditional, prediction_type=prediction_type,
                         vae_kind=vae_kind)


class PoolBackbone:
    """A transparent test double: the latent is the 8x8 average of the pixels (3 channels plus
    one of zeros), decoding upsamples it, and the denoiser predicts zero noise (so DDIM returns
    its input). Pixel-level assertions (orientation, colours, rate vs. quality) become possible
    without a trained model."""

    id = "pool"
    stride = 8
    latent_channels = 4
    weights_digest = "00" * 32

    def __init__(self, prediction_type: str = "epsilon"):
        from diffusers import DDIMScheduler  # heavy: diffusers, optional and slow to import

        self.scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       prediction_type=prediction_type)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.calls: list[int] = []

    def encode(self, x):
        pooled = torch.nn.functional.avg_pool2d(x, self.stride) * 2.0
        return torch.cat([pooled, torch.zeros_like(pooled[:, :1])], dim=1)

    def decode(self, z):
        return torch.nn.functional.interpolate(z[:, :3] / 2.0, scale_factor=self.stride, mode="nearest")

    def model_output(self, z_t, t):
        self.calls.append(int(t))
        if self.scheduler.config.prediction_type == "v_prediction":
            a = float(self.scheduler.alphas_cumprod[t])
            return -((1 - a) ** 0.5) / (a ** 0.5) * z_t  # v for zero noise: x0 = z/sqrt(a)
        return torch.zeros_like(z_t)

    def channel_steps(self):
        return None

    def entropy_model(self):
        return None


def pink_noise_images(root: str | Path, n: int, size: int = 128, seed: int = 0) -> Path:
    """``n`` PNGs of coloured 1/f noise (the power spectrum of natural photos), for training tests
    that need latents with natural-image correlations; written into ``root``."""
    import numpy as np  # heavy: numpy, which testing.codec does not load at import
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    f[0, 0] = 1.0
    for i in range(n):
        mix = rng.normal(0, 0.3, (3, 3)) + np.eye(3)  # correlated colour channels
        planes = [np.real(np.fft.ifft2(np.fft.fft2(rng.normal(0, 1, (size, size))) / f**1.1)) for _ in range(3)]
        a = np.stack(planes, -1) @ mix
        a = (a - a.mean()) / a.std() * 50 + 128 + rng.normal(0, 3, a.shape)
        Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(root / f"pink{i:03d}.png")
    return root
