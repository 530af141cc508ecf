"""The embedded default backbone "tiny": a small AutoencoderKL (8x downsampling, 8 latent
channels), a small conv UNet2DModel denoiser and a DDIM scheduler, trained by ``archiver train``
and shipped in ``archiver/weights`` as safetensors so that it runs on a laptop CPU without any
network access.

The architecture lives here (not in the weights file) only as defaults for training; a shipped
model always carries its own configs in ``tiny.json`` and the safetensors metadata.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Optional

import torch

from .. import diffusers_light
from ....errors import UsageError, WeightsMismatchError
from .diffusers_backbone import DiffusersBackbone

BACKBONE_ID = "tiny"
WEIGHTS_DIR = Path(__file__).resolve().parents[3] / "weights"
WEIGHTS_FILE = "tiny.safetensors"
CONFIG_FILE = "tiny.json"
#: The data package that keeps the earlier shipped weights, one folder each (same two files), so
#: that files encoded with them still decode after an upgrade: a .dlc names its weights by digest
#: and nothing else fits. It is separate from the runtime package (23 MB the wheel need not carry)
#: and installed beside it by the README's install command.
ARCHIVE_PACKAGE = "archiver-weights-archive"
ARCHIVE_INSTALL = "pip install -e packages/archiver-weights-archive (in archiver's repository)"
#: every earlier release by digest, so that a file naming one of them gets told what to install
#: when the data package is missing (rather than a bare mismatch)
EARLIER_RELEASES = {
    "896fa3372be8b140229d7c5e08b5ce53ea2c4817bb0de76f116e848b0e1ff09e": "2026-11-25-v1",
    "294c50bdb13c1bfe16e686d773459764a24ee14f755f9740b65abc6395852b4a": "2026-11-26-v2",
}


def _archive_releases_dir() -> Path:
    """The data package's ``releases`` folder; without the package, a folder that is not there
    (where a checkout before issue 25 kept them), so that no release is found."""
    try:
        import archiver_weights_archive  # heavy: an optional data package (no code): earlier weights only
    except ImportError:
        return WEIGHTS_DIR / "releases"
    return Path(archiver_weights_archive.RELEASES_DIR)


RELEASES_DIR = _archive_releases_dir()

#: The autoencoder: an 8x8 block transform (stride 8, 8 latent channels) initialised with the
#: principal components of natural-image blocks, plus learned non-linear context nets at latent
#: resolution and a small full-resolution refinement (``block_ae.py``). On 2 CPU cores a small
#: conv AutoencoderKL trained from scratch reached only ~20 dB on Kodak in an hour; the PCA
#: start is ~23.6 dB before any training and the model decodes 768x512 in ~0.2 CPU-seconds.
VAE_CONFIG = dict(
    kind="block",
    latent_channels=8,
    hidden_channels=128,
    encoder_blocks=1,
    decoder_blocks=3,
    refine_channels=16,
    block_out_channels=[8, 8, 8, 8],  # 4 entries = stride 8 for the backbone's bookkeeping
    scaling_factor=1.0,  # replaced by 1/std of the trained latents
    force_upcast=False,
)

#: Weights release 3: a rate–distortion-trained transform (``rd_ae.py``, compressai's
#: mean-scale hyperprior size at quality 3: N = 128, M = 192, stride 16) with its checkerboard
#: entropy model trained jointly (``archiver train --stage rd``), a wide conv-only denoiser for
#: the 192-channel latent, and a decoder fine-tuned for realism (``--stage realism``).
RD_VAE_CONFIG = dict(
    kind="rd",
    channels=128,
    latent_channels=192,
    block_out_channels=[128, 128, 128, 128, 192],  # 5 entries = stride 16
    scaling_factor=1.0,  # replaced by 1/std of the trained latents
    force_upcast=False,
)
RD_ENTROPY_CONFIG = dict(kind="checkerboard", latent_channels=192, hyper_channels=128, param_channels=[640, 512])
RD_UNET_CONFIG = dict(
    sample_size=32,
    in_channels=192,
    out_channels=192,
    down_block_types=["DownBlock2D", "DownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "UpBlock2D", "UpBlock2D"],
    block_out_channels=[96, 128, 160],
    layers_per_block=1,
    norm_num_groups=32,
    add_attention=False,
)

#: The conventional alternative (AutoencoderKL, SD-like but small), kept for GPU training runs.
CONV_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[16, 32, 64, 128],
    layers_per_block=1,
    latent_channels=8,
    norm_num_groups=8,
    mid_block_add_attention=False,
    scaling_factor=1.0,
    force_upcast=False,
)

#: Convolution-only UNet: the codec only denoises at low noise levels, a local texture task,
#: and no attention keeps it size-agnostic and cheap on CPU.
UNET_CONFIG = dict(
    sample_size=32,
    in_channels=8,
    out_channels=8,
    down_block_types=["DownBlock2D", "DownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "UpBlock2D", "UpBlock2D"],
    block_out_channels=[64, 96, 128],
    layers_per_block=1,
    norm_num_groups=16,
    add_attention=False,
)

#: Latent-diffusion (Stable Diffusion) noise schedule, 1000 training steps, epsilon prediction.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=True,
    steps_offset=0,
    prediction_type="epsilon",
)


def build_vae(config: Optional[dict] = None):
    cfg = dict(config or VAE_CONFIG)
    if cfg.get("kind") == "block":  # the block-transform autoencoder (block_ae.py)
        from .block_ae import BlockAutoencoder  # heavy: diffusers (via codecs.diffusion.backbones.block_ae), which codecs.diffusion.backbones.tiny does not load at import

        return BlockAutoencoder(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    if cfg.get("kind") == "rd":  # the rate–distortion-trained transform of release 3 (rd_ae.py)
        from .rd_ae import RDAutoencoder  # heavy: compressai, diffusers (via codecs.diffusion.backbones.rd_ae), which codecs.diffusion.backbones.tiny does not load at import

        return RDAutoencoder(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    diffusers_light.load()
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL  # heavy: diffusers, optional and slow to import

    return AutoencoderKL(**cfg)


def build_unet(config: Optional[dict] = None):
    diffusers_light.load()  # the UNet's module, not all of diffusers (start-up time)
    from diffusers.models.unets.unet_2d import UNet2DModel  # heavy: diffusers, optional and slow to import

    return UNet2DModel(**(config or UNET_CONFIG))


def build_scheduler(config: Optional[dict] = None):
    diffusers_light.load()
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler  # heavy: diffusers, optional and slow to import

    return DDIMScheduler(**(config or SCHEDULER_CONFIG))


def weights_digest(weights_dir: Path) -> str:
    """SHA-256 over the shipped files (config, then weights): any change to either is a
    different model, and bitstreams made with another one are refused."""
    h = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        with open(Path(weights_dir) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _release_digests(releases_dir: Path) -> dict[str, Path]:
    if not releases_dir.is_dir():
        return {}
    return {weights_digest(d): d for d in sorted(releases_dir.iterdir())
            if (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file()}


def find_release(digest: str, releases_dir: Optional[Path] = None) -> Optional[Path]:
    """The folder of the earlier shipped weights with this digest, if the package has them."""
    return _release_digests(Path(releases_dir or RELEASES_DIR)).get(digest)


def missing_release(digest: str) -> Optional[str]:
    """Why an earlier release's file cannot decode here (its data package is not installed), in
    one line naming what to install; None for a digest that is no earlier release."""
    name = EARLIER_RELEASES.get(digest)
    if name is None:
        return None
    return (f"this file was encoded with the tiny weights of release {name} (sha256 {digest[:16]}...), "
            f"which are kept in the separate package {ARCHIVE_PACKAGE}, not installed here: {ARCHIVE_INSTALL}")


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _split(state: dict, prefix: str) -> dict:
    n = len(prefix)
    return {k[n:]: v for k, v in state.items() if k.startswith(prefix)}


def _assemble(vae, unet, scheduler, *, digest: str, channel_steps, entropy, device, t_scale: float = 1.0,
              eta: float = 0.0, trained_grid: bool = False):
    # channels-last convolutions are ~30% faster on CPU for these small channel counts (torch's own
    # Module.to: diffusers' override would import its offloading hooks and torch._dynamo, ~1.5
    # CPU-seconds of start-up, to check for offloading these freshly built models cannot have)
    torch.nn.Module.to(vae.eval().requires_grad_(False), memory_format=torch.channels_last)
    torch.nn.Module.to(unet.eval().requires_grad_(False), memory_format=torch.channels_last)
    if entropy is not None:
        entropy.eval().requires_grad_(False)
    backbone = DiffusersBackbone.from_components(
        vae, unet, scheduler, backbone_id=BACKBONE_ID, weights_digest=digest,
        channel_steps=channel_steps, entropy_model=entropy, device=device, t_scale=t_scale,
    )
    backbone.eta, backbone.trained_grid = float(eta), bool(trained_grid)
    return backbone


def build_entropy(config: Optional[dict]):
    """The codec's trained entropy model for ``config`` (``kind`` + constructor kwargs), or None."""
    if config is None:
        return None
    from ..entropy import build_entropy_model  # heavy: compressai (via codecs.diffusion.entropy), which codecs.diffusion.backbones.tiny does not load at import

    return build_entropy_model(config)


def load_tiny(device: str = "auto", weights_dir: Optional[str | Path] = None):
    """The shipped tiny backbone, from safetensors only (never pickle), with no network."""
    from safetensors.torch import load_file  # heavy: safetensors (torch), only with the diffusion codec

    wdir = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    cfg_path, w_path = wdir / CONFIG_FILE, wdir / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise UsageError(f"tiny backbone weights not found in {wdir} (run `archiver train` and ship them)")
    cfg = json.loads(cfg_path.read_text())
    missing = [k for k in ("vae", "unet", "scheduler") if k not in cfg]
    if missing:
        raise UsageError(f"{cfg_path}: incomplete tiny model (no {', '.join(missing)}); finish `archiver train`")
    digest = weights_digest(wdir)
    state = load_file(str(w_path))
    vae, unet = build_vae(cfg["vae"]), build_unet(cfg["unet"])
    vae.load_state_dict(_split(state, "vae."))
    unet.load_state_dict(_split(state, "unet."))
    entropy = build_entropy(cfg.get("entropy"))
    if entropy is not None:
        entropy.load_state_dict(_split(state, "entropy."))
        if hasattr(entropy, "update"):
            entropy.update(force=True)
    steps = state.get("channel_steps")
    dev = _resolve_device(device)
    # the codec settings the weights were trained for: the timestep rule (t_scale), the sampler's
    # noise (eta, release 3) and whether the latent's quantization grid is trained (release 3)
    codec = cfg.get("codec", {})
    return _assemble(vae, unet, build_scheduler(cfg["scheduler"]), digest=digest, channel_steps=steps,
                     entropy=entropy, device=dev, t_scale=float(codec.get("t_scale", 1.0)),
                     eta=float(codec.get("eta", 0.0)), trained_grid=codec.get("quant") == "trained")


def random_tiny(seed: int = 0, device: str = "cpu"):
    """An untrained tiny backbone with the shipped architecture, for tests before (or without)
    trained weights. Its digest names the seed so it can never pass for trained weights."""
    torch.manual_seed(seed)
    vae, unet = build_vae(), build_unet()
    digest = hashlib.sha256(f"tiny-random-seed-{seed}".encode()).hexdigest()
    return _assemble(vae, unet, build_scheduler(), digest=digest, channel_steps=None,
                     entropy=None, device=_resolve_device(device))


def check_digest(expected: str, weights_dir: Optional[str | Path] = None) -> None:
    actual = weights_digest(Path(weights_dir) if weights_dir else WEIGHTS_DIR)
    if actual != expected:
        raise WeightsMismatchError(f"tiny weights digest {actual[:12]} != expected {expected[:12]}")
