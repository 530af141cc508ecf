"""One registry of codecs, by name (compressai's ``@register_model``; the catalog row's ``codec``
plays diffusers' ``_class_name``: the name a stored artifact is re-opened with).

``codec_for(row)`` is how restore and verify find the codec of an archived file: by the codec
name and version its catalog row records, never by guessing from a suffix or an action string.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

from ..errors import ArchiverError, UsageError
from .base import Codec, CodecSettings, Exactness

C = TypeVar("C", bound=type[Codec])

_CLASSES: dict[str, type[Codec]] = {}
_INSTANCES: dict[tuple[str, CodecSettings], Codec] = {}
_lock = threading.Lock()


def register_codec(name: str) -> Callable[[C], C]:
    """Class decorator: make a ``Codec`` subclass available under ``name``."""

    def deco(cls: C) -> C:
        if name in _CLASSES and _CLASSES[name] is not cls:
            raise ValueError(f"codec name {name!r} is already registered by {_CLASSES[name].__qualname__}")
        cls.name = name
        _CLASSES[name] = cls
        return cls

    return deco


def names() -> tuple[str, ...]:
    """Every registered codec name, in registration order."""
    return tuple(_CLASSES)


def codec_of_data(data: bytes) -> str | None:
    """The first registered codec that claims ``data`` by its signature, or None."""
    for name, cls in _CLASSES.items():
        if cls.claims(data):
            return name
    return None


def suffixes() -> tuple[str, ...]:
    """Every suffix a registered codec's artifacts may have: the one home for "is this ours?"."""
    out: list[str] = []
    for cls in _CLASSES.values():
        for ext in cls.exts or (cls.ext,):
            if ext and ext not in out:
                out.append(ext)
    return tuple(out)


def codec_class(name: str) -> type[Codec]:
    try:
        return _CLASSES[name]
    except KeyError:
        raise UsageError(f"unknown codec {name!r} (known: {', '.join(_CLASSES)})") from None


def is_lossy(name: str) -> bool:
    """Whether the codec called ``name`` gives back an approximation (it then needs a floor)."""
    return codec_class(name).exactness is Exactness.APPROX


def is_generative(name: str) -> bool:
    """Whether the codec called ``name`` invents detail (allowed only where a rule allows it)."""
    return bool(codec_class(name).generative)


def get_codec(name: str, settings: CodecSettings | None = None) -> Codec:
    """The codec called ``name`` with ``settings`` (one instance per pair: a backbone loads once)."""
    cls = codec_class(name)
    key = (name, settings or CodecSettings())
    with _lock:
        if key not in _INSTANCES:
            _INSTANCES[key] = cls(key[1])
        return _INSTANCES[key]


def codec_for(row, settings: CodecSettings | None = None) -> Codec:
    """The codec that reads the artifact a catalog row describes (by its codec and version)."""
    name = getattr(row, "codec", None)
    if not name:
        raise ArchiverError(f"{row.path}: the catalog names no codec for this file")
    cls = _CLASSES.get(name)
    if cls is None:
        raise ArchiverError(f"{row.path}: archived with codec {name!r}, which this archiver does not have "
                            f"(known: {', '.join(_CLASSES)}); upgrade archiver to restore it")
    version = getattr(row, "codec_version", None) or 1
    if version > cls.version:
        raise ArchiverError(f"{row.path}: archived with {name} version {version}, newer than this archiver's "
                            f"version {cls.version}; upgrade archiver to restore it")
    return get_codec(name, settings)
