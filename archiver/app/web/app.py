"""The Flask application: pages for people, ``/api/...`` JSON for programs, one set of views.

Security model (see docs/web.md):
- everything that only reads is open to whoever reaches the server, which by default is only
  this machine (127.0.0.1, and Host headers other than loopback names are refused, so a web
  page elsewhere cannot read the dashboard through DNS rebinding);
- anything that changes data (restore) needs the configured token, compared in constant time:
  the page's form carries it with a CSRF token (Flask-WTF), the API takes it as
  ``Authorization: Bearer`` (a header no other site can make a browser send);
- no token configured: the dashboard is read-only, changes are refused;
- images are reached only through catalog ids, files of the bench page only by name below the
  bench folder (no ``..``, no symbolic link anywhere below it), never through a path from the
  request.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets

from flask import Flask, Response, abort, jsonify, render_template, request, send_file
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.routing import IntegerConverter

from ...catalog import queries as q
from ...catalog.models import FileVersion
from ...catalog.models import MAX_ID
from ...codecs import is_lossy
from ...errors import ArchiverError, CatalogError, UsageError
from ...work import restore
from ..output import human_bytes
from . import views
from .duplicates import duplicates_blueprint
from .images import NoPicture, Pictures
from .plot import bytes_svg
from .settings import WebSettings

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


class Denied(ArchiverError):
    exit_code = 9

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


class CatalogId(IntegerConverter):
    """``<id:...>`` in a route: a catalog id, 1 to ``MAX_ID``. Anything else (a number no database
    integer holds) matches no route: 404, never an OverflowError from the database driver."""

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=MAX_ID)


def token_ok(settings: WebSettings, given: str | None) -> None:
    """Raise ``Denied`` unless ``given`` is the configured token."""
    if not settings.token:
        raise Denied("read-only dashboard: no web.token is configured, so nothing can be changed")
    if not given:
        raise Denied("this action needs the token", 401)
    if not hmac.compare_digest(given.encode(), settings.token.encode()):
        raise Denied("wrong token")


def _bearer() -> str | None:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def create_app(cfg, settings: WebSettings, catalog, *, vault=None, codecs_factory=None) -> Flask:
    """``catalog``: an open ``Catalog``; ``codecs_factory()``: the codec registry for this
    installation (``codecs.bound.Codecs``), built on the first decode (torch is slow to import)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # sessions and CSRF tokens end with the process
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=64 * 1024,  # only small forms are ever posted
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session; the session dies with the server
        TRUSTED_HOSTS=LOOPBACK_NAMES if settings.loopback else None,
    )
    app.json.sort_keys = False
    app.url_map.converters["id"] = CatalogId
    csrf = CSRFProtect(app)
    pictures = Pictures(settings.cache_dir, vault=vault, codecs_factory=codecs_factory,
                        cache_max_bytes=settings.cache_max_bytes)
    if settings.warm_decoder:
        pictures.start_warm(lambda: _lossy_codecs(catalog))
    bench_dir = settings.resolved_bench_dir()
    pages = views.Views(cfg, catalog, refresh_s=settings.overview_refresh_s)
    app.extensions["archiver.views"] = pages  # the benchmark empties its caches to time a cold visit
    app.jinja_env.filters.update(bytes=human_bytes, pct=lambda f: f"{(f or 0) * 100:.1f}%", json=_json_text, json_pretty=_json_pretty,
                                 num=lambda n: f"{n or 0:,}",
                                 when=lambda t: t.strftime("%Y-%m-%d %H:%M") if t else "–")
    app.jinja_env.globals.update(writable=bool(settings.token))

    def wants_json() -> bool:
        return request.path.startswith("/api/")

    # -- errors: one clear message, JSON for the API ------------------------------------------
    def _error(status: int, message: str):
        if wants_json():
            return jsonify({"error": message, "status": status}), status
        return render_template("error.html", status=status, message=message), status

    @app.errorhandler(Denied)
    def _denied(e: Denied):
        return _error(e.status, str(e))

    @app.errorhandler(UsageError)
    def _usage(e):
        return _error(400, str(e))

    @app.errorhandler(CSRFError)
    def _csrf(e):
        return _error(400, f"CSRF check failed ({e.description}); reload the page and try again")

    @app.errorhandler(404)
    def _404(e):
        return _error(404, "not found")

    @app.errorhandler(400)
    def _400(e):
        from werkzeug.exceptions import SecurityError  # heavy: werkzeug, only the web dashboard

        if isinstance(e, SecurityError):  # an untrusted Host: answer without building any URL from it
            return Response("untrusted Host header\n", status=400, mimetype="text/plain")
        return _error(400, getattr(e, "description", "bad request"))

    @app.errorhandler(405)
    def _405(e):
        return _error(405, "method not allowed")

    @app.errorhandler(413)
    def _413(e):
        return _error(413, "request too large")

    @app.before_request
    def _small_bodies_only():
        if (request.content_length or 0) > app.config["MAX_CONTENT_LENGTH"]:
            abort(413)

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        return resp

    def _row(file_id: int):
        with catalog.read_session() as s:
            row = s.get(FileVersion, file_id)
            if row is None:
                abort(404)
            s.expunge(row)
        return row

    # -- pages ---------------------------------------------------------------------------------
    @app.get("/")
    def overview_page():
        d = pages.overview()
        return render_template("overview.html", d=d, plot=bytes_svg(d["over_time"]))

    @app.get("/files")
    def browse_page():
        return render_template("browse.html", d=pages.browse(request.args))

    @app.get("/files/<id:file_id>")
    def file_page(file_id: int):
        d = views.file_detail(catalog, file_id)
        if d is None:
            abort(404)
        return render_template("file.html", d=d, f=d["file"], message=None)

    @app.post("/files/<id:file_id>/restore")
    def restore_form(file_id: int):
        token_ok(settings, request.form.get("token"))
        result = _restore(file_id)
        d = views.file_detail(catalog, file_id)
        return render_template("file.html", d=d, f=d["file"], message=result), _restore_status(result)

    @app.get("/bench/")
    def bench_page():
        return render_template("bench.html", runs=views.bench_runs(bench_dir), run=None, summary=None)

    @app.get("/bench/<name>/")
    def bench_run_page(name: str):
        run = views.bench_run(bench_dir, name)
        if run is None:
            abort(404)
        return render_template("bench.html", runs=None, run=run, summary=_markdown(run["summary_md"]))

    @app.get("/bench/<name>/<path:filename>")
    def bench_file(name: str, filename: str):
        if bench_dir is None or not filename.lower().endswith(".png") or views.bench_run(bench_dir, name) is None:
            abort(404)
        try:  # no '..', no absolute path, no link anywhere below the bench folder
            fd = views.open_bench_file(bench_dir, name, filename)
        except OSError:
            abort(404)
        return send_file(os.fdopen(fd, "rb"), mimetype="image/png", max_age=60)

    # -- the API ---------------------------------------------------------------------------------
    @app.get("/api/overview")
    def api_overview():
        return jsonify(pages.overview())

    @app.get("/api/status")
    def api_status():
        with catalog.read_session() as s:
            body = {"daemon": views.daemon_status(cfg, catalog), "queue": q.queue_depth(s),
                    "states": q.state_counts(s), "last_event_at": q.last_event_at(s), "writable": bool(settings.token),
                    "decoder": pictures.decoder}
        return jsonify(body)

    @app.get("/api/files")
    def api_browse():
        return jsonify(pages.browse(request.args, choices=False))

    @app.get("/api/files/<id:file_id>")
    def api_file(file_id: int):
        d = views.file_detail(catalog, file_id)
        if d is None:
            abort(404)
        return jsonify(d)

    @app.get("/api/files/<id:file_id>/original")
    def api_original(file_id: int):
        return _picture(lambda: pictures.original(_row(file_id)))

    @app.get("/api/files/<id:file_id>/decoded")
    def api_decoded(file_id: int):
        return _picture(lambda: pictures.decoded(_row(file_id)))

    @app.get("/api/files/<id:file_id>/thumb")
    def api_thumb(file_id: int):
        return _picture(lambda: pictures.thumbnail(_row(file_id)), max_age=300)

    @csrf.exempt
    @app.post("/api/files/<id:file_id>/restore")
    def api_restore(file_id: int):
        token_ok(settings, _bearer())
        result = _restore(file_id)
        return jsonify(result), _restore_status(result)

    @app.get("/api/bench")
    def api_bench():
        return jsonify(views.bench_runs(bench_dir))

    app.register_blueprint(duplicates_blueprint(catalog))  # /duplicates, /api/duplicates (issue 28)

    # -- helpers ---------------------------------------------------------------------------------
    def _picture(get, max_age: int = 60):
        try:
            pic = get()
        except NoPicture as e:  # nothing to show (404), or a damaged vault copy and no other (409)
            return _error(e.status, str(e))
        except ArchiverError as e:  # a damaged file, other weights: said, not a crash
            return _error(422, str(e))
        resp = Response(pic.data, mimetype=pic.mimetype)
        resp.headers["X-Archiver-Source"] = pic.source
        if pic.note:
            resp.headers["X-Archiver-Note"] = pic.note
        resp.headers["Cache-Control"] = f"private, max-age={max_age}"
        return resp

    def _restore(file_id: int) -> dict:
        _row(file_id)  # 404 for an unknown id
        try:
            results = restore(catalog, [str(file_id)], vault=vault, codecs=pictures.codecs)
        except CatalogError as e:
            return {"id": file_id, "status": "refused", "message": str(e)}
        return results[0].to_dict()

    return app


def _lossy_codecs(catalog) -> list[str]:
    """The codecs the catalog names whose pictures must be decoded (approximations)."""
    with catalog.read_session() as s:
        names = q.distinct_values(s, "codec")
    out = []
    for n in names:
        try:
            if is_lossy(n):
                out.append(n)
        except UsageError:  # a codec this archiver does not have: its pages say so
            pass
    return out


def _json_text(v) -> str:
    """Event details and evidence as readable JSON (the template escapes it)."""
    return json.dumps(v, ensure_ascii=False, default=str, sort_keys=True)


def _json_pretty(v) -> str:
    """Indented JSON for the pages' "raw JSON" toggles (the template escapes it)."""
    return json.dumps(v, ensure_ascii=False, default=str, sort_keys=True, indent=2)


def _restore_status(result: dict) -> int:
    return {"restored": 200, "present": 200, "refused": 409}.get(result.get("status"), 500)


def _markdown(text: str | None) -> str | None:
    """The bench summary as HTML; raw HTML in it is escaped (markdown-it with html off)."""
    if not text:
        return None
    from markdown_it import MarkdownIt  # heavy: markdown_it, only the web dashboard

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
