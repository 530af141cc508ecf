"""Running the dashboard: waitress (a production WSGI server, pure Python) on the configured
address, either in the foreground (``archiver serve``) or on a thread of the daemon."""

from __future__ import annotations

import logging
import threading
import time

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


#: request threads: a grid page asks for a few dozen thumbnails at once, and a browser sends six
#: at a time; decodes are one at a time whatever the count (``images._DECODE_LOCK``)
DEFAULT_THREADS = 8
#: waitress's "Task queue depth is N" is said at most this often
QUEUE_NOTE_EVERY_S = 60.0


class QueueDepthNote(logging.Filter):
    """Folds waitress's "Task queue depth is N" warnings (one per request that waits for a free
    thread, so a grid page could print dozens) into at most one line per ``every_s`` seconds,
    with the deepest queue seen and how many warnings it stands for. Every other record of the
    ``waitress.queue`` logger passes unchanged; the ``waitress`` logger's errors are not touched."""

    def __init__(self, every_s: float = QUEUE_NOTE_EVERY_S):
        super().__init__()
        self.every_s = every_s
        self._lock = threading.Lock()
        self._said_at: float | None = None
        self._folded = 0
        self._deepest = 0

    def reset(self) -> None:
        """Forget the last note: the next warning is said at once."""
        with self._lock:
            self._said_at, self._folded, self._deepest = None, 0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Task queue depth"):
            return True
        depth = record.args[0] if isinstance(record.args, tuple) and record.args else 0
        with self._lock:
            self._folded += 1
            self._deepest = max(self._deepest, int(depth))
            now = time.monotonic()
            if self._said_at is not None and now - self._said_at < self.every_s:
                return False
            record.msg = ("requests are waiting for a free server thread: queue depth up to %d (%d time(s) since the "
                          "last note; the next note comes after %ds at the earliest; more threads: serve --threads)")
            record.args = (self._deepest, self._folded, int(self.every_s))
            self._said_at, self._folded, self._deepest = now, 0, 0
            return True


def quiet_queue_warnings(every_s: float = QUEUE_NOTE_EVERY_S) -> QueueDepthNote:
    """Install ``QueueDepthNote`` on waitress's queue logger (once per process); returns it."""
    queue_log = logging.getLogger("waitress.queue")
    for f in queue_log.filters:
        if isinstance(f, QueueDepthNote):
            return f
    note = QueueDepthNote(every_s)
    queue_log.addFilter(note)
    return note


def make_server(app, settings: WebSettings, threads: int = DEFAULT_THREADS):
    """A bound waitress server (``port_of(server)`` is the real port when 0 was asked), with
    its queue-depth warnings folded (``quiet_queue_warnings``)."""
    from waitress.server import create_server  # heavy: waitress, only the web dashboard

    quiet_queue_warnings()
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
