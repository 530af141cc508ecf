"""One way for every command to talk to people (text, progress bars) and to programs (--json)."""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Iterator

from ..text import emit, human_bytes, report_error, to_json

__all__ = ["emit", "human_bytes", "progress", "report_error", "to_json"]


def progress(iterable: Iterable, *, total: int | None = None, desc: str = "", enabled: bool = True,
             stream=None, every_seconds: float = 60.0, every_items: int | None = None,
             status: Callable[[], str] | None = None, clock: Callable[[], float] = time.monotonic) -> Iterator:
    """Progress of long work on stderr: a bar on a terminal; otherwise (cron, nohup, a log file)
    a summary line at most every ``every_seconds`` or every ``every_items`` items (default: every
    5% of ``total``, which is ``len(iterable)`` when not given; 1,000 when unknown), and one at the
    end: "verify: 12,000/100,000 (12%), 0 problems, 850.0/min, ~104 min left". ``status()`` adds
    its words (e.g. problems so far). Silent under --json."""
    if not enabled:
        yield from iterable
        return
    out = stream or sys.stderr
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if out.isatty():
        from tqdm import tqdm  # heavy: tqdm, which app.output does not load at import

        bar = tqdm(iterable, total=total, desc=desc, unit="img", file=out, dynamic_ncols=True)
        for item in bar:
            yield item
            if status is not None:
                bar.set_postfix_str(status(), refresh=False)
        return
    t0 = last = clock()
    step = every_items or (max(1, total // 20) if total else 1000)
    n = last_n = 0

    def line() -> str:
        el = clock() - t0
        rate = f", {n / el * 60:.1f}/min" if el >= 1 else ""  # not from the first instants: it would jump about
        extra = f", {status()}" if status is not None else ""
        if total:
            eta = (total - n) / (n / el) if n and el >= 1 else None
            left = f", ~{eta / 60:.0f} min left" if eta is not None and n < total else ""
            return f"{desc}: {n:,}/{total:,} ({n / total:.0%}){extra}{rate}{left}"
        return f"{desc}: {n:,} done{extra}{rate}"

    for item in iterable:
        yield item
        n += 1
        now = clock()
        if n - last_n >= step or now - last >= every_seconds:
            last, last_n = now, n
            out.write(line() + "\n")
            out.flush()
    if n != last_n:
        out.write(line() + "\n")
        out.flush()
