"""``archiver serve``: the web dashboard."""

from __future__ import annotations

import json
import sys

import click

from ...errors import UsageError
from ..core import with_core
from ..output import emit


@click.command()
@click.option("--host", default=None, help="address to bind (default: web.host, else 127.0.0.1)")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="port (default: web.port, else 8765; 0 = any free)")
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True,
              help="request threads (decodes still run one at a time)")  # = app.web.server.DEFAULT_THREADS
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="config file")
@click.option("--json", "as_json", is_flag=True, help="print where it serves as one JSON line, then serve")
@with_core
def serve(host, port, threads, as_json, core):
    """Serve the dashboard: overview, file browser, original-vs-decoded file pages, bench results.

    Read-only unless web.token is set in the config; restores then need that token."""
    from ..web.server import build_app, make_server, port_of, url_of  # heavy: the web dashboard (app.web, ~6 ms), not loaded by archiver --help
    from ..web.settings import web_settings  # heavy: the web dashboard (app.web, ~6 ms), not loaded by archiver --help

    cfg = core.cfg
    settings = web_settings(cfg, host=host, port=port)
    try:
        server = make_server(build_app(cfg, settings), settings, threads=threads)
    except OSError as e:
        raise UsageError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror}") from None
    url = url_of(server, settings)
    info = {"url": url, "host": settings.host, "port": port_of(server), "writable": bool(settings.token),
            "loopback_only": settings.loopback}
    if as_json:  # one line, so that a program can read it while the server goes on
        print(json.dumps(info), flush=True)
    else:
        emit(info, False, f"archiver dashboard on {url} ({'restores need the token' if settings.token else 'read-only'})"
             + ("" if settings.loopback else "\nwarning: listening beyond this machine; anyone who reaches it can see the archive"))
    sys.stdout.flush()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
