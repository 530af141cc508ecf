"""The project's own entries. ``ours`` is the archive's own diffusion codec from the registry
(``archiver.codecs``: what ``archive`` runs); the two diagnostics look inside it through the
codec's public contract (``archiver.codecs.diffusion.pipeline`` and ``archiver.codecs.diffusion.backbones``):

- ``ours``: the registry's ``diffusion`` codec at the target bpp (its rate control), decoded as
  a restore decodes it;
- ``ours-nodiff``: the very same bytes decoded with ``steps=0`` (plain autoencoder decode of the
  dequantized latent), so the difference between the two is the diffusion step alone;
- ``ae``: the autoencoder alone (encode -> decode, no quantization), a ceiling at no fixed rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ..codecs import CodecSettings
from ..codecs import Source, Target
from ..codecs.diffusion import DiffusionCodec
from ..imageio import LoadedImage


class OursUnavailable(Exception):
    """The codec cannot be run here (not built yet, no weights...); the reason is reported."""


class Ours:
    def __init__(self, backbone_name: str = "tiny", device: str = "cpu", model_path: str | None = None,
                 adapter: str | None = None):
        try:
            from ..codecs.diffusion import pipeline  # heavy: optional, its failure is handled by the surrounding try
            from ..codecs.diffusion.adapter import get_adapted_backbone  # heavy: optional, its failure is handled by the surrounding try
        except ImportError as e:
            raise OursUnavailable(f"the diffusion codec is not available in this build ({e})") from None
        try:
            if backbone_name == "tiny-random":  # untrained, same architecture: proves the harness only
                from ..codecs.diffusion.backbones.tiny import random_tiny  # heavy: optional, its failure is handled by the surrounding try

                self.backbone = random_tiny(0, device=device)
            else:
                self.backbone = get_adapted_backbone(backbone_name, model_path=model_path, device=device, adapter=adapter)
        except Exception as e:  # missing or damaged weights are a reason to skip, not to crash
            raise OursUnavailable(f"backbone {backbone_name!r} could not be loaded: {e}") from None
        self.pipeline = pipeline

    def describe(self) -> dict:
        try:
            return dict(self.backbone.describe())
        except Exception:  # pragma: no cover - describe is optional sugar
            return {"id": getattr(self.backbone, "id", "?")}

    def codec(self, steps: int | None):
        """The registry's diffusion codec on this backbone (what ``archive`` encodes with)."""
        return DiffusionCodec(CodecSettings(decode_steps=steps), backbone=self.backbone)

    def encode(self, img: LoadedImage, bpp: float, steps: int | None) -> Any:
        """-> the codec's ``Encoded`` (``.data``, ``.bpp``, ``.params``: quality, t, steps, rate_note)."""
        return self.codec(steps).encode(Source(img, b""), Target(bpp=bpp))

    def decode(self, data: bytes, steps: int | None) -> Image.Image:
        """``steps`` None: as a restore decodes (the header's steps); a number: that many (0 = none)."""
        if steps is None:
            return self.codec(None).decode(data).convert("RGB")
        return self.pipeline.decode_bytes(data, self.backbone, steps=steps).image.convert("RGB")

    def autoencode(self, rgb: Image.Image) -> Image.Image:
        """Pad to the stride (edge replicate), encode, decode, crop: the no-quantization ceiling."""
        import torch  # heavy: torch, optional and slow to import

        s = int(self.backbone.stride)
        a = np.asarray(rgb.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
        h, w = a.shape[:2]
        a = np.pad(a, ((0, -h % s), (0, -w % s), (0, 0)), mode="edge")
        x = torch.from_numpy(a).permute(2, 0, 1)[None]
        x = x.to(device=self.backbone.device, dtype=self.backbone.dtype)
        with torch.no_grad():
            y = self.backbone.decode(self.backbone.encode(x))
        y = y[0, :, :h, :w].float().clamp(-1, 1).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(np.round((y + 1.0) * 127.5).astype(np.uint8), "RGB")
