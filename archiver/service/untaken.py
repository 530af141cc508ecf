"""The files a run did not take, by type and with the reason, for every run's report (migrate,
its dry run, the daemon's scan, ``archive DIR``): names the walk passed over (not an image, a type
archiver does not read, unfinished downloads), camera raw files kept untouched, unreadable files."""

from __future__ import annotations

import os
import re
from typing import Iterable

from ..imageio import RAW_REASON
from ..storage.atomic import shown_name


def file_type(path: str) -> str:
    """A file's type as reports group it: its lowercased suffix, or "(no suffix)"."""
    return os.path.splitext(str(path))[1].lower() or "(no suffix)"


def kept_for_type(reasons: Iterable[str] | None) -> str | None:
    """``RAW_REASON`` when a file's recorded reasons say it was kept untouched for its type."""
    return RAW_REASON if any(str(r).startswith(RAW_REASON) for r in reasons or ()) else None


def short_error(path: str, error: str | None) -> str:
    """A skipped file's error without its path and details, to group on: "skipped: corrupt or
    truncated image", "skipped: camera raw that LibRaw cannot read"."""
    text = str(error or "unknown error")
    for prefix in (f"{path}: ", f"{shown_name(path)}: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return "skipped: " + re.split(r" \(|;", text, maxsplit=1)[0].strip()


def of_outcomes(outcomes: Iterable[dict]) -> list[tuple[str, str]]:
    """(path, reason) of the files a run read but did not archive for their type (camera raw) or
    because they could not be read."""
    out = []
    for o in outcomes:
        path = str(o.get("path"))
        kept = kept_for_type(o.get("reasons"))
        if kept:
            out.append((path, kept))
        elif o.get("status") in ("unreadable", "skipped") and o.get("error"):
            out.append((path, short_error(path, o.get("error"))))
    return out


def group(items: Iterable[tuple[str, str]], examples: int = 3) -> list[dict]:
    """(path, reason) pairs grouped by type and reason, most files first: each group's ``type``,
    ``reason``, ``files`` and the first ``examples`` paths."""
    groups: dict[tuple[str, str], list[str]] = {}
    for path, why in items:
        groups.setdefault((file_type(path), why), []).append(shown_name(path))
    rows = [{"type": t, "reason": why, "files": len(ps), "examples": ps[:examples]} for (t, why), ps in groups.items()]
    return sorted(rows, key=lambda g: (-g["files"], g["type"], g["reason"]))
