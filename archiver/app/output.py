"""One way for every command to talk to people (text, progress bars) and to programs (--json)."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator

from ..text import emit, human_bytes, report_error, to_json

__all__ = ["emit", "human_bytes", "progress", "report_error", "to_json"]


def progress(iterable: Iterable, *, total: int | None = None, desc: str = "", enabled: bool = True,
             stream=None, every_seconds: float = 60.0) -> Iterator:
    """Progress of long work on stderr: a bar on a terminal; otherwise (cron, nohup, a log file)
    one plain line every 5% or every ``every_seconds``, and one at the end. Silent under --json."""
    if not enabled:
        yield from iterable
        return
    out = stream or sys.stderr
    if out.isatty():
        from tqdm import tqdm  # heavy: tqdm, which app.output does not load at import

        yield from tqdm(iterable, total=total, desc=desc, unit="img", file=out, dynamic_ncols=True)
        return
    t0 = last = time.monotonic()
    step = max(1, (total or 0) // 20)
    n = 0

    def line() -> str:
        el = time.monotonic() - t0
        rate = n / el * 60 if el > 0 else 0.0
        if total:
            eta = (total - n) / (n / el) if n and el > 0 else None
            left = f", ~{eta / 60:.0f} min left" if eta is not None and n < total else ""
            return f"{desc}: {n}/{total} ({n / total:.0%}), {rate:.1f}/min{left}"
        return f"{desc}: {n} done, {rate:.1f}/min"

    for item in iterable:
        yield item
        n += 1
        now = time.monotonic()
        if n % step == 0 or now - last >= every_seconds:
            last = now
            out.write(line() + "\n")
            out.flush()
    if n % step:
        out.write(line() + "\n")
        out.flush()
