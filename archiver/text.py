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


def report_error(error: BaseException, prog: str, json_wanted: bool, echo: Callable[..., None]) -> int:
    """Print a user error (an ``ArchiverError``, or an interrupt) the one way every command does
    and return the exit code: with ``json_wanted`` the object ``{error, kind, exit_code}`` on
    stdout, then ``PROG: error: MESSAGE`` (or ``PROG: interrupted``, 130) on stderr.
    ``echo(text, err=bool)`` prints (``click.echo``)."""
    if isinstance(error, KeyboardInterrupt):
        echo(f"{prog}: interrupted", err=True)
        return 130
    code = int(getattr(error, "exit_code", 1))
    if json_wanted:
        echo(to_json({"error": str(error), "kind": type(error).__name__, "exit_code": code}), err=False)
    echo(f"{prog}: error: {error}", err=True)
    return code
