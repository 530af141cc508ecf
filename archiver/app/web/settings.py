"""The ``web:`` config mapping, checked once: a typo in a security setting is an error at
start, never a silently open dashboard."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ...errors import UsageError
from .cache import DEFAULT_MAX_BYTES as DEFAULT_CACHE_MAX_BYTES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: shorter tokens are refused: the token is the only thing between the network and a restore
MIN_TOKEN_LEN = 16


@dataclass
class WebSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: the shared secret that unlocks changes (restore); None = read-only
    token: str | None = None
    #: ``archiver daemon`` also serves the dashboard
    with_daemon: bool = False
    #: published ``archiver bench`` results (default: docs/bench of a source checkout)
    bench_dir: str | None = None
    #: decoded images for the file pages (default: <state dir>/web-cache)
    cache_dir: str | None = None
    #: the most that folder holds, in bytes; least recently used pictures go first (0 = no cache)
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES
    #: while the catalog keeps changing, the overview's sums are computed again at most this often
    overview_refresh_s: float = 10.0
    #: load the decoder of the catalog's generative codec (torch, the backbone's weights) on a
    #: background thread when the server starts, so that the first decoded picture does not wait
    #: for it (false: loaded on the first decoded picture, and never if nobody opens one)
    warm_decoder: bool = True

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def resolved_bench_dir(self) -> Path | None:
        if self.bench_dir:
            return Path(self.bench_dir)
        here = Path(__file__).resolve().parents[3] / "docs" / "bench"
        return here if here.is_dir() else None


def web_settings(cfg, **overrides) -> WebSettings:
    """``cfg.web`` (a mapping) plus non-None ``overrides`` (command-line options)."""
    raw = dict(getattr(cfg, "web", None) or {})
    if not isinstance(raw, dict):
        raise UsageError("config 'web' must be a mapping (host, port, token, with_daemon, bench_dir, cache_dir, "
                         "cache_max_bytes, overview_refresh_s, warm_decoder)")
    known = set(WebSettings.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UsageError(f"unknown web setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    ws = WebSettings(**raw)
    if not isinstance(ws.port, int) or not 0 <= ws.port <= 65535:
        raise UsageError(f"web.port: not a port number: {ws.port!r}")
    if ws.token is not None:
        if not isinstance(ws.token, str) or len(ws.token) < MIN_TOKEN_LEN:
            raise UsageError(f"web.token must be a string of at least {MIN_TOKEN_LEN} characters "
                             "(e.g. the output of: python -c 'import secrets; print(secrets.token_urlsafe())')")
    if not isinstance(ws.overview_refresh_s, (int, float)) or ws.overview_refresh_s < 0:
        raise UsageError("web.overview_refresh_s must be a number of seconds (0 or more)")
    if not isinstance(ws.with_daemon, bool):
        raise UsageError("web.with_daemon must be true or false")
    if not isinstance(ws.warm_decoder, bool):
        raise UsageError("web.warm_decoder must be true or false")
    if not isinstance(ws.cache_max_bytes, int) or isinstance(ws.cache_max_bytes, bool) or ws.cache_max_bytes < 0:
        raise UsageError(f"web.cache_max_bytes must be a whole number of bytes, 0 or more (0 = no picture cache); "
                         f"got {ws.cache_max_bytes!r}")
    if ws.cache_dir is not None and not (isinstance(ws.cache_dir, str) and ws.cache_dir):
        raise UsageError(f"web.cache_dir must be a folder's path; got {ws.cache_dir!r}")
    if ws.cache_dir is None:
        ws.cache_dir = str(cache_dir_of(cfg))
    return ws


def cache_dir_of(cfg) -> Path:
    """The dashboard's picture cache: ``web.cache_dir``, else ``<state dir>/web-cache``. Read
    without checking the rest of ``web:``, so ``stats`` and ``doctor`` count it whatever else is
    wrong there."""
    raw = getattr(cfg, "web", None)
    given = raw.get("cache_dir") if isinstance(raw, dict) else None
    return Path(given) if isinstance(given, str) and given else cfg.state_dir / "web-cache"
