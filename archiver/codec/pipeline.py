"""Encode and decode images with a latent diffusion backbone (Relic et al., ECCV 2024).

Encode: pad -> autoencoder latent -> per-channel quantization (rate control picks the quality
factor) -> entropy coding -> timestep by SNR matching -> .dlc container.
Decode: verify -> entropy decode -> dequantize -> x_t = sqrt(abar_t) * y_hat -> deterministic
DDIM from t to 0 -> autoencoder decode -> crop -> original mode and metadata.
"""

from __future__ import annotations

import io
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ContainerError, InputError, UsageError, WeightsMismatchError
from ..imageio import DEFAULT_MAX_PIXELS, ImageMetadata, LoadedImage, load_image
from . import container
from .backbones.base import Backbone
from .entropy import ChannelGaussianEntropyModel, generic_entropy_model, get_entropy_model
from .quantize import QuantParams, from_units, latent_roi, noise_variance, snr_timestep, to_units

# deterministic cuBLAS needs this before the first CUDA call (harmless on CPU)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

#: DDIM steps the encoder suggests when none are given (the decoder may override)
DEFAULT_STEPS = 4
#: quality Q in [0, 100] <-> quality factor s = 2 ** ((50 - Q) / 8): Q 50 = one step per latent std
QUALITY_MIN, QUALITY_MAX = 0.0, 100.0
#: rate control stops when the real bpp is this close to the target (the promise is 10%)
RATE_TOLERANCE = 0.03
#: finer steps inside protected regions
DEFAULT_ROI_FACTOR = 2.0
#: modes restored on decode (anything else comes back as RGB)
_GRAY16 = ("I;16", "I;16B", "I;16L", "I")


def quality_to_s(q: float) -> float:
    """float32-exact, as the header stores it: the encoder uses exactly what the decoder reads."""
    return float(np.float32(2.0 ** ((50.0 - q) / 8.0)))


def s_to_quality(s: float) -> float:
    return 50.0 - 8.0 * math.log2(s)


@dataclass
class EncodeResult:
    data: bytes
    bpp: float  # real: len(data) * 8 / (width * height)
    width: int
    height: int
    t: int
    steps: int
    quality: float  # Q in [0, 100]
    s: float  # the quality factor behind Q
    size_bytes: int
    target_bpp: Optional[float] = None
    rate_note: Optional[str] = None  # why the target could not be met, if it could not
    entropy_model: str = "generic"
    t_snr: int = 0  # the SNR-matched timestep (t differs by the backbone's t_scale or search_t)
    t_search: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        """Every field but the bytes (for --json and logs)."""
        return {k: v for k, v in self.__dict__.items() if k != "data"}


@dataclass
class DecodedImage:
    image: Image.Image
    metadata: ImageMetadata
    header: container.Header
    steps: int = 0
    seconds: float = 0.0


# -- tensors <-> pixels -----------------------------------------------------------------------

def _to_tensor(rgb: Image.Image) -> torch.Tensor:
    a = np.asarray(rgb.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1)[None] / 127.5 - 1.0


def _pad_to(x: torch.Tensor, stride: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if not (ph or pw):
        return x
    # reflection keeps edge statistics natural; it needs the pad smaller than the image
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _to_image(x: torch.Tensor, width: int, height: int) -> Image.Image:
    x = x[0, :, :height, :width].float().clamp(-1, 1)
    a = torch.round((x + 1.0) * 127.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def codec_threads() -> int:
    """CPU threads the codec always runs with. CPU kernels split their sums by thread count, so
    1 and 2 threads give pixels up to 2 levels apart: a fixed count keeps "same bytes -> same
    pixels" true whatever the caller set (``ARCHIVER_CODEC_THREADS``; encode and verify must agree)."""
    try:
        return max(1, int(os.environ.get("ARCHIVER_CODEC_THREADS", "4")))
    except ValueError:
        raise UsageError("ARCHIVER_CODEC_THREADS must be a positive integer") from None


@contextmanager
def _deterministic():
    """Same bytes -> same pixels: deterministic kernels and a fixed CPU thread count."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(codec_threads())
    try:
        with torch.no_grad():
            yield
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.backends.cudnn.benchmark = prev_bench
        torch.set_num_threads(prev_threads)


# -- diffusion --------------------------------------------------------------------------------

def ddim_timesteps(t: int, steps: int) -> list[int]:
    """Descending timesteps from t, evenly spaced, ``steps`` of them (fewer if t is small)."""
    if t <= 0 or steps <= 0:
        return []
    ts = np.round(np.linspace(t, 0, steps + 1)[:-1]).astype(int)
    return sorted({int(v) for v in ts if v > 0}, reverse=True)


def ddim(model_output, alphas_cumprod: torch.Tensor, prediction: str, y_hat: torch.Tensor, t: int,
         steps: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from ``x_t = sqrt(abar_t) * y_hat`` at step t down to 0.

    Written from ``alphas_cumprod`` because diffusers' schedulers cannot start at an arbitrary t.
    ``model_output(z, t)`` is the denoiser. The decoder runs it in float64 between model calls
    (same bytes -> same pixels); training runs the very same steps in float32 to backpropagate
    through them.
    """
    ts = ddim_timesteps(t, steps)
    if not ts:
        return y_hat
    ac = alphas_cumprod.double()
    z = math.sqrt(float(ac[t])) * y_hat.to(dtype)
    for i, ti in enumerate(ts):
        a = float(ac[ti])
        a_prev = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        out = model_output(z.float(), ti).to(dtype=dtype, device=z.device)
        if prediction == "epsilon":
            eps = out
            x0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
        elif prediction == "v_prediction":
            x0 = math.sqrt(a) * z - math.sqrt(1 - a) * out
            eps = math.sqrt(a) * out + math.sqrt(1 - a) * z
        elif prediction == "sample":
            x0 = out
            eps = (z - math.sqrt(a) * x0) / math.sqrt(1 - a)
        else:
            raise UsageError(f"unsupported prediction type {prediction!r}")
        z = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return z.float()


def denoise(backbone: Backbone, y_hat: torch.Tensor, t: int, steps: int) -> torch.Tensor:
    """The decoder's reverse process with the backbone's denoiser and schedule."""
    return ddim(backbone.model_output, backbone.scheduler.alphas_cumprod,
                backbone.scheduler.config.prediction_type, y_hat, t, steps)


# -- encode -----------------------------------------------------------------------------------

def _alpha_png(alpha: Image.Image) -> bytes:
    buf = io.BytesIO()
    alpha.convert("L").save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _entropy_for(backbone: Backbone):
    model = backbone.entropy_model()
    if model is not None:
        return model, model.kind, "trained"
    return generic_entropy_model(), ChannelGaussianEntropyModel.kind, "generic"


class _Coder:
    """Everything that does not depend on the quality factor, so rate control only re-quantizes."""

    def __init__(self, img: LoadedImage, backbone: Backbone, roi_regions, roi_factor: float):
        self.img, self.backbone = img, backbone
        x = _pad_to(_to_tensor(img.rgb), backbone.stride)
        self.y = backbone.encode(x.to(backbone.device)).float().cpu()
        c = self.y.shape[1]
        self.mu = self.y.mean(dim=(0, 2, 3))
        steps = backbone.channel_steps()
        self.delta = (torch.ones(c) if steps is None else steps.detach().float().cpu().reshape(c))
        if max(self.y.shape[-2:]) > 65535:
            raise InputError(f"{img.width}x{img.height}: too long a side for the .dlc format")
        self.roi = latent_roi(roi_regions, backbone.stride, tuple(self.y.shape[-2:]))
        if len(self.roi) > 255:  # the header holds 255 boxes: protect their union instead
            self.roi = [(min(b[0] for b in self.roi), min(b[1] for b in self.roi),
                         max(b[2] for b in self.roi), max(b[3] for b in self.roi))]
        self.roi_factor = float(roi_factor) if self.roi else 1.0
        self.entropy, self.kind, self.entropy_name = _entropy_for(backbone)
        meta = img.metadata
        self.sections = {
            container.ALPHA: _alpha_png(img.alpha) if img.alpha is not None else b"",
            container.EXIF: meta.exif or b"",
            container.ICC: meta.icc_profile or b"",
            container.XMP: meta.xmp or b"",
        }

    def params(self, s: float) -> QuantParams:
        return QuantParams(mu=self.mu, delta=self.delta, s=s, roi=self.roi, roi_factor=self.roi_factor)

    def t_for(self, p: QuantParams) -> int:
        return snr_timestep(self.backbone.scheduler.alphas_cumprod, noise_variance(p, self.y.shape))

    def pack(self, s: float, t: int, steps: int) -> bytes:
        """The complete .dlc file at quality factor ``s``."""
        payload, _ = self.entropy.encode(to_units(self.y, self.params(s)))
        _, c, lh, lw = self.y.shape
        header = container.Header(
            backbone_id=self.backbone.id, weights_sha256=self.backbone.weights_digest,
            width=self.img.width, height=self.img.height, mode=self.img.original_mode,
            stride=self.backbone.stride, latent_channels=c, latent_height=lh, latent_width=lw,
            entropy_kind=self.kind, t=t, steps=steps, s=s, mu=self.mu.tolist(),
            delta=self.delta.tolist(), roi_factor=self.roi_factor, roi=self.roi,
        )
        sections = dict(self.sections)
        sections[container.LATENT] = payload
        return container.pack(header, sections)


def _bpp(data: bytes, img: LoadedImage) -> float:
    return len(data) * 8.0 / (img.width * img.height)


def _rate_control(coder: _Coder, target: float) -> tuple[float, Optional[str]]:
    """Bisection on the quality Q (rate grows with Q) for the real file size; returns (Q, note)."""

    def bpp_at(qv: float) -> float:
        return _bpp(coder.pack(quality_to_s(qv), 0, 0), coder.img)

    lo, hi = QUALITY_MIN, QUALITY_MAX
    r_lo, r_hi = bpp_at(lo), bpp_at(hi)
    if target <= r_lo:
        note = None if r_lo <= target * 1.1 else (
            f"target {target:g} bpp is below the lowest rate this image allows "
            f"({r_lo:.4g} bpp at quality {lo:g}; headers and side information need that much)")
        return lo, note
    if target >= r_hi:
        note = None if r_hi >= target * 0.9 else (
            f"target {target:g} bpp is above the highest rate this codec reaches for it "
            f"({r_hi:.4g} bpp at quality {hi:g})")
        return hi, note
    best_q, best_err = lo, abs(r_lo - target) / target
    for _ in range(24):
        mid = (lo + hi) / 2
        r = bpp_at(mid)
        err = abs(r - target) / target
        if err < best_err:
            best_q, best_err = mid, err
        if err <= RATE_TOLERANCE:
            break
        if r > target:
            hi = mid
        else:
            lo = mid
    note = None
    if best_err > 0.10:
        note = (f"closest reachable rate is {best_err:.0%} off the target {target:g} bpp "
                "(the rate jumps between neighbouring quality values for this image)")
    return best_q, note


def _score(original: Image.Image, recon: Image.Image) -> float:
    from ..metrics import ms_ssim

    return ms_ssim(original, recon)


def encode_image(img: LoadedImage, backbone: Optional[Backbone] = None, *, bpp: Optional[float] = None,
                 quality: Optional[float] = None, steps: Optional[int] = None, search_t: bool = False,
                 roi: Optional[Sequence[tuple[int, int, int, int]]] = None,
                 roi_factor: float = DEFAULT_ROI_FACTOR) -> EncodeResult:
    """Encode a loaded image to .dlc bytes.

    ``bpp``: target rate (rate control by bisection on the real file size); ``quality``: fixed
    Q in [0, 100] (default 50 when neither is given). ``steps``: DDIM steps written into the
    header (default 4, 0 = no diffusion). ``search_t``: decode a few timesteps around the
    SNR-matched one and keep the best MS-SSIM. ``roi``: pixel boxes coded with finer steps.
    """
    start = time.perf_counter()
    if bpp is not None and quality is not None:
        raise UsageError("give either a target bpp or a quality, not both")
    if bpp is not None and not (bpp > 0 and math.isfinite(bpp)):
        raise UsageError(f"target bpp must be a positive number, not {bpp}")
    if quality is not None and not (QUALITY_MIN <= quality <= QUALITY_MAX):
        raise UsageError(f"quality must be between {QUALITY_MIN:g} and {QUALITY_MAX:g}, not {quality}")
    if steps is not None and not (0 <= steps <= 255):
        raise UsageError(f"steps must be between 0 and 255, not {steps}")
    if backbone is None:
        backbone = default_backbone()
    n_steps = DEFAULT_STEPS if steps is None else int(steps)
    with _deterministic():
        coder = _Coder(img, backbone, roi, roi_factor)
        note = None
        if bpp is not None:
            qv, note = _rate_control(coder, float(bpp))
        else:
            qv = 50.0 if quality is None else float(quality)
        s = quality_to_s(qv)
        t_snr = coder.t_for(coder.params(s))
        t = int(round(t_snr * float(getattr(backbone, "t_scale", 1.0))))
        searched: list[dict] = []
        if search_t and n_steps > 0 and t_snr > 0:
            t, searched = _search_t(coder, s, t_snr, n_steps)
        data = coder.pack(s, t, n_steps if t > 0 else 0)
    return EncodeResult(
        data=data, bpp=_bpp(data, img), width=img.width, height=img.height, t=t,
        steps=n_steps if t > 0 else 0, quality=s_to_quality(s), s=s, size_bytes=len(data),
        target_bpp=bpp, rate_note=note, entropy_model=coder.entropy_name, t_snr=t_snr,
        t_search=searched, notes=list(img.notes), seconds=time.perf_counter() - start,
    )


def _search_t(coder: _Coder, s: float, t_snr: int, n_steps: int) -> tuple[int, list[dict]]:
    """Try a few timesteps around the SNR match (the encoder has the original) and keep the best."""
    t_max = len(coder.backbone.scheduler.alphas_cumprod) - 1
    candidates = sorted({0, *(min(t_max, max(1, round(t_snr * f))) for f in (0.5, 0.75, 1.0, 1.25, 1.5))})
    p = coder.params(s)
    y_hat = from_units(coder.entropy.encode(to_units(coder.y, p))[1], p)
    results = []
    for t in candidates:
        z = denoise(coder.backbone, y_hat.to(coder.backbone.device), t, n_steps)
        recon = _to_image(coder.backbone.decode(z), coder.img.width, coder.img.height)
        results.append({"t": t, "ms_ssim": _score(coder.img.rgb, recon)})
    best = max(results, key=lambda r: (r["ms_ssim"], -abs(r["t"] - t_snr)))
    return best["t"], results


# -- decode -----------------------------------------------------------------------------------

def default_backbone(name: Optional[str] = None, model_path: Optional[str] = None, device: Optional[str] = None):
    """The configured backbone (config: backbone, diffusers_model, device)."""
    from ..config import load_config
    from .backbones import get_backbone

    cfg = load_config()
    name = name or cfg.backbone
    if name == "diffusers":
        model_path = model_path or cfg.diffusers_model
    return get_backbone(name, model_path=model_path, device=device or cfg.device)


def _backbone_for(header: container.Header, backbone: Optional[Backbone]) -> Backbone:
    if backbone is None:
        backbone = default_backbone(header.backbone_id)
    if backbone.weights_digest != header.weights_sha256 and header.backbone_id == "tiny":
        # encoded by an earlier release of the embedded weights: the package keeps those, so an
        # upgrade never strands archived files
        from .backbones import get_backbone
        from .backbones.tiny import find_release

        release = find_release(header.weights_sha256)
        if release is not None:
            backbone = get_backbone("tiny", model_path=release, device=str(backbone.device))
    if backbone.weights_digest != header.weights_sha256 or backbone.id != header.backbone_id:
        raise WeightsMismatchError(
            f"this file was encoded with backbone {header.backbone_id!r} weights "
            f"sha256 {header.weights_sha256[:16]}..., but the loaded backbone is {backbone.id!r} "
            f"with weights {backbone.weights_digest[:16]}...; decode it with the same weights")
    if backbone.stride != header.stride or backbone.latent_channels != header.latent_channels:
        raise ContainerError("the file's latent geometry does not match its backbone")
    return backbone


def _restore_mode(rgb: Image.Image, mode: str, alpha: Optional[Image.Image]) -> Image.Image:
    """Back to the original's mode where that is sensible (gray stays gray, alpha comes back)."""
    if mode in _GRAY16:
        a = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(a.astype(np.uint16))  # mode I;16
        return img if alpha is None else Image.merge("LA", (rgb.convert("L"), alpha))
    if mode in ("1", "L", "LA", "F", "La"):
        gray = rgb.convert("L")
        if alpha is not None or mode in ("LA", "La"):
            return Image.merge("LA", (gray, alpha if alpha is not None else Image.new("L", gray.size, 255)))
        return gray
    if alpha is not None or mode in ("RGBA", "RGBa", "PA"):
        a = alpha if alpha is not None else Image.new("L", rgb.size, 255)
        return Image.merge("RGBA", (*rgb.split(), a))
    return rgb


def decode_bytes(data: bytes, backbone: Optional[Backbone] = None, *, steps: Optional[int] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode .dlc bytes (verified first) to an image in the original's mode, with its metadata."""
    start = time.perf_counter()
    header, sections = container.unpack(data)
    if steps is not None and not (0 <= steps <= 1000):
        raise UsageError(f"steps must be between 0 and 1000, not {steps}")
    if header.pixels > max_pixels:
        raise ContainerError(f"the .dlc file claims {header.width}x{header.height} pixels, over the "
                             f"limit of {max_pixels} (refused like a decompression bomb)")
    backbone = _backbone_for(header, backbone)
    n_steps = header.steps if steps is None else int(steps)
    shape = (1, header.latent_channels, header.latent_height, header.latent_width)
    alpha = None
    if container.ALPHA in sections:
        try:
            alpha = Image.open(io.BytesIO(sections[container.ALPHA]))
            if alpha.size != (header.width, header.height):  # checked before decoding its pixels
                raise ContainerError("damaged .dlc file: alpha size does not match the image")
            alpha.load()
        except ContainerError:
            raise
        except Exception:
            raise ContainerError("damaged .dlc file: unreadable alpha section") from None
        alpha = alpha.convert("L")
    with _deterministic():
        try:
            entropy = get_entropy_model(header.entropy_kind, backbone)
            u_hat = entropy.decode(sections[container.LATENT], shape)
        except (ValueError, RuntimeError) as e:
            raise ContainerError(f"cannot decode the latent: {e}") from None
        p = QuantParams(mu=torch.tensor(header.mu), delta=torch.tensor(header.delta), s=header.s,
                        roi=[tuple(b) for b in header.roi], roi_factor=header.roi_factor)
        y_hat = from_units(u_hat, p).to(backbone.device)
        z = denoise(backbone, y_hat, header.t, n_steps)
        x = backbone.decode(z)
    rgb = _to_image(x, header.width, header.height)
    meta = ImageMetadata(exif=sections.get(container.EXIF) or None,
                         icc_profile=sections.get(container.ICC) or None,
                         xmp=sections.get(container.XMP) or None)
    image = _restore_mode(rgb, header.mode, alpha)
    return DecodedImage(image=image, metadata=meta, header=header, steps=n_steps if header.t > 0 else 0,
                        seconds=time.perf_counter() - start)


# -- files ------------------------------------------------------------------------------------

def output_file_mode() -> int:
    """Permissions a plainly created file would get (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _save_kwargs(fmt: str, meta: ImageMetadata) -> dict:
    kw = {}
    if meta.exif and fmt in ("PNG", "JPEG", "WEBP", "TIFF", "JXL", "AVIF", "HEIF"):
        kw["exif"] = meta.exif
    if meta.icc_profile and fmt in ("PNG", "JPEG", "WEBP", "TIFF", "JXL", "AVIF", "HEIF"):
        kw["icc_profile"] = meta.icc_profile
    if meta.xmp:
        if fmt == "PNG":
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            info.add_itxt("XML:com.adobe.xmp", meta.xmp.decode("utf-8", "replace"))
            kw["pnginfo"] = info
        elif fmt in ("JPEG", "WEBP", "TIFF", "JXL", "AVIF"):
            kw["xmp"] = meta.xmp
    if fmt == "JPEG":
        kw["quality"] = 95
    if fmt == "WEBP":
        kw["lossless"] = True
    return kw


def format_for(path: str | Path) -> str:
    """PIL format from the output suffix (PNG when there is none)."""
    ext = Path(path).suffix.lower()
    if not ext:
        return "PNG"
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise UsageError(f"{path}: cannot write images with suffix {ext!r} (try .png)")
    return fmt


def image_bytes(decoded: DecodedImage, fmt: str = "PNG") -> bytes:
    """The decoded image serialised in ``fmt`` with the original's metadata."""
    img = decoded.image
    kw = _save_kwargs(fmt, decoded.metadata)
    buf = io.BytesIO()
    try:
        img.save(buf, fmt, **kw)
    except (OSError, ValueError, KeyError):
        # the format cannot hold this mode (e.g. JPEG and alpha or 16 bits): the closest it can
        fallback = img.convert("RGBA" if "A" in img.mode and fmt != "JPEG" else ("L" if img.mode in ("L", "LA", "I;16") else "RGB"))
        buf = io.BytesIO()
        fallback.save(buf, fmt, **kw)
    return buf.getvalue()


def encode_file(src: str | Path, dst: str | Path, *, backbone: Optional[Backbone] = None,
                bpp: Optional[float] = None, quality: Optional[float] = None, steps: Optional[int] = None,
                search_t: bool = False, roi=None, max_pixels: Optional[int] = None,
                overwrite: bool = True) -> EncodeResult:
    """Read an image file, encode it and write the .dlc atomically."""
    from ..storage.atomic import write_bytes

    img = load_image(src) if max_pixels is None else load_image(src, max_pixels=max_pixels)
    result = encode_image(img, backbone, bpp=bpp, quality=quality, steps=steps, search_t=search_t, roi=roi)
    write_bytes(dst, result.data, overwrite=overwrite, mode=output_file_mode())
    return result


def decode_file(src: str | Path, dst: str | Path, *, backbone: Optional[Backbone] = None,
                steps: Optional[int] = None, overwrite: bool = True) -> DecodedImage:
    """Decode a .dlc file to an image file (format from ``dst``'s suffix), written atomically."""
    from ..storage.atomic import write_bytes

    fmt = format_for(dst)
    try:
        data = Path(src).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{src}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{src}: is a directory") from None
    decoded = decode_bytes(data, backbone, steps=steps)
    write_bytes(dst, image_bytes(decoded, fmt), overwrite=overwrite, mode=output_file_mode())
    return decoded
