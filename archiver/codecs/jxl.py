"""Lossy JPEG XL (libjxl through pillow-jxl-plugin) at the policy's floor."""

from __future__ import annotations

import importlib.util
from typing import Optional

import pillow_jxl

from .conventional import PillowLossyCodec
from .registry import register_codec


@register_codec("jxl")
class JxlCodec(PillowLossyCodec):
    version = 1
    ext = ".jxl"
    pil_format = "JXL"
    #: a JPEG XL container or bare codestream (the lossless codec claims its own first)
    signatures = (b"\x00\x00\x00\x0cJXL \r\n\x87\n", b"\xff\x0a")
    summary = "conventional lossy: JPEG XL at the smallest quality that meets the floor"
    #: libjxl effort 4 (1 fastest, 9 slowest; libjxl's default is 7): at the same SSIMULACRA2
    #: score its files are smaller than effort 7's (2.6% at 70, 6.3% at 90) and take 2.7x less
    #: CPU (60 train/ validation photos: bench/encoder_speed.py, docs/operations.md "Throughput")
    effort = 4
    #: up to 99 (distance ~0.2): a visually lossless target is often reached only above 95
    quality_range = (1, 99)
    typical_quality = {70.0: 67, 90.0: 93}

    @classmethod
    def unavailable(cls) -> Optional[str]:
        if importlib.util.find_spec("pillow_jxl") is None:
            return "pillow-jxl-plugin is not installed (pip install pillow-jxl-plugin)"
        return None

    def _plugin(self) -> None:
        super()._plugin()
    def save_options(self, target=None) -> dict:
        return {"effort": self.effort, "lossless": False, "num_threads": 1}
