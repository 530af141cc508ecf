"""Codecs as objects: every way archiver can store an image, behind one interface.

Flow: the policy names an action and an ordered ``fallback`` list (or ``best`` among several);
``choice.Choice`` turns that into codecs from the registry and tries them in order; each
``Codec`` encodes a ``Source`` into an ``Encoded`` artifact (bytes + the facts the catalog
records), ``verify`` judges it against the original (the one quality guard for lossy codecs,
identity for exact ones), and later ``codec_for(row)`` re-opens it for restore and scrub.

Modules: ``base`` (the interface, the guard), ``registry`` (``@register_codec``, ``get_codec``,
``codec_for``), one module or package per codec: ``diffusion`` (the diffusion codec and its
internals), ``lossless`` (and its JPEG XL ``format``), ``avif``, ``jxl`` (the last two share
``conventional``), ``choice`` (fallback chains and ``best``) and ``bound`` (``Codecs``: the
registry with one run's settings).
"""

from __future__ import annotations

from .base import (Codec, CodecBeaten, CodecRefused, CodecSettings, Encoded, Exactness, Recorded, Restored, Source, Target, Verdict,
                   guard, image_digest, measure)
from .registry import codec_class, codec_for, codec_of_data, get_codec, is_generative, is_lossy, names, register_codec, suffixes

# importing a codec module registers it (each keeps its heavy imports for first use)
from . import diffusion, lossless, avif, jxl  # noqa: E402,F401  isort: skip
from .bound import Codecs  # noqa: E402

__all__ = ["Codec", "CodecBeaten", "Codecs", "CodecRefused", "CodecSettings", "Encoded", "Exactness", "Recorded", "Restored", "Source",
           "Target", "Verdict", "codec_class", "codec_for", "codec_of_data", "get_codec", "guard", "image_digest", "is_generative", "is_lossy", "measure", "names",
           "register_codec", "suffixes"]
