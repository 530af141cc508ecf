"""Plain renderings every ring may use: JSON text of results, sizes in bytes for people, and
``emit``, the one way a command prints a result (also training's, which is outside ``app``)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable


def _default(o: Any) -> Any:
    if is_dataclass(o):
        return asdict(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, bytes):
        return o.hex()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_json(data: Any) -> str:
    return json.dumps(data, default=_default, indent=2, sort_keys=False)


def emit(data: Any, as_json: bool, human: Callable[[Any], str] | str | None = None) -> None:
    """Print ``data`` as JSON (for programs) or through ``human`` (for people)."""
    if as_json:
        sys.stdout.write(to_json(data) + "\n")
        return
    if human is None:
        text = to_json(data)
    elif callable(human):
        text = human(data)
    else:
        text = human
    if text:
        sys.stdout.write(text.rstrip("\n") + "\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
