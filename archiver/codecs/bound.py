"""The registry bound to one run: ``Codecs`` (this installation's settings, test overrides).

The unit of work's steps never name a codec: ``classify`` asks ``Codecs.choice`` for the decision's codecs in
order (the action, ``best``'s candidates, the fallback list), ``encode`` takes the next
candidate, ``check`` asks that codec to verify the file read back from disk, and ``restore`` /
``verify`` open archived files with ``Codecs.for_row`` (the codec name and version the catalog
row records).
"""

from __future__ import annotations

from typing import Optional

from .base import Codec, CodecSettings
from .choice import Choice
from .registry import codec_for, get_codec


class Codecs:
    """The registry's codecs with this installation's settings. ``overrides`` replaces codecs by
    name with given instances (tests: a fast stand-in for the diffusion codec)."""

    def __init__(self, settings: Optional[CodecSettings] = None, overrides: Optional[dict[str, Codec]] = None):
        self.settings = settings or CodecSettings()
        self.overrides = dict(overrides or {})

    @classmethod
    def from_config(cls, config) -> "Codecs":
        return cls(CodecSettings.from_config(config))

    def get(self, name: str) -> Codec:
        return self.overrides.get(name) or get_codec(name, self.settings)

    def for_row(self, row) -> Codec:
        """The codec that reads ``row``'s artifact (refuses unknown codecs and newer versions)."""
        codec = codec_for(row, self.settings)
        return self.overrides.get(codec.name, codec)

    def choice(self, action: str, params: dict) -> Choice:
        return Choice(action, params, get=self.get)
