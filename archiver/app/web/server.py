"""Running the dashboard: waitress (a production WSGI server, pure Python) on the configured
address, either in the foreground (``archiver serve``) or on a thread of the daemon."""

from __future__ import annotations

import logging
import threading

from ...storage.vault import Vault
from .plot import bytes_svg
from .settings import web_settings, WebSettings

log = logging.getLogger("archiver.web")


def build_app(cfg, settings: WebSettings, catalog=None):
    """The app for ``cfg`` (opening the catalog unless one is given)."""
    from ...catalog.db import open_catalog  # heavy: sqlalchemy (via catalog.db), which app.web.server does not load at import
    from .app import create_app  # heavy: flask, sqlalchemy, werkzeug (via app.web.app), which app.web.server does not load at import

    def codecs():
        from ...work import Codecs  # heavy: sqlalchemy (via work), which app.web.server does not load at import

        return Codecs.from_config(cfg)

    catalog = catalog or open_catalog(cfg)
    bytes_svg([])  # import and warm up matplotlib now, not on the first visitor's request
    return create_app(cfg, settings, catalog, vault=Vault(cfg.resolved_vault_dir()), codecs_factory=codecs)


def make_server(app, settings: WebSettings, threads: int = 4):
    """A bound waitress server (``port_of(server)`` is the real port when 0 was asked)."""
    from waitress.server import create_server  # heavy: waitress, only the web dashboard

    return create_server(app, host=settings.host, port=settings.port, threads=threads, ident="archiver",
                         clear_untrusted_proxy_headers=True)


def port_of(server) -> int:
    """The port ``server`` listens on, as a number (waitress's ``effective_port`` is the string
    ``getnameinfo`` gives)."""
    return int(server.effective_port)


def url_of(server, settings: WebSettings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{port_of(server)}/"


class BackgroundServer:
    """The dashboard on a daemon thread (``web.with_daemon``); ``stop()`` closes it."""

    def __init__(self, cfg, settings: WebSettings):
        self.server = make_server(build_app(cfg, settings), settings)
        self.url = url_of(self.server, settings)
        self._thread = threading.Thread(target=self._run, name="archiver-web", daemon=True)

    def _run(self) -> None:
        try:
            self.server.run()
        except OSError:  # closed under it at stop()
            pass

    def start(self) -> "BackgroundServer":
        self._thread.start()
        log.info("dashboard serving", extra={"url": self.url})
        return self

    def stop(self) -> None:
        self.server.close()
        self._thread.join(timeout=5)


def start_with_daemon(cfg, log: logging.Logger):
    """The dashboard on a thread when ``web.with_daemon`` is set, else None; a dashboard that
    cannot start (port taken) is logged on ``log`` and the daemon goes on without it."""
    settings = web_settings(cfg)
    if not settings.with_daemon:
        return None
    try:
        return BackgroundServer(cfg, settings).start()
    except Exception as e:
        log.error("dashboard not started", extra={"error": str(e), "host": settings.host, "port": settings.port})
        return None
