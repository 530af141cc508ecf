"""How the dashboard's server behaves as a process (issue 26): the decoder is loaded on a
background thread at start, not on the first visitor's picture, and waitress's "Task queue depth
is N" warnings are folded into one line a minute instead of one per waiting request."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from archiver.app.web.app import create_app
from archiver.app.web.server import DEFAULT_THREADS, make_server, quiet_queue_warnings
from archiver.app.web.settings import web_settings
from archiver.config import Config
from archiver.testing.catalog import FakeCodec
from archiver.testing.web import make_collection


class SlowToLoad(FakeCodec):
    """The fake diffusion codec, with a decoder that takes a while to load (like torch and the
    backbone's weights) and counts its loads."""

    def __init__(self):
        super().__init__()
        self.loads = 0
        self.release = threading.Event()  # the load takes until the test says so
        self.release.set()

    def warm(self) -> None:
        self.release.wait(30)
        self.loads += 1


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webserve")
    codec = SlowToLoad()
    ctx, ids = make_collection(tmp, codec=codec, preview=False)
    return tmp, ctx, ids, codec


def _app(coll, **web):
    tmp, ctx, _, _ = coll
    cfg = Config(catalog_url=ctx.catalog.url, vault_dir=str(tmp / "vault"), web={"cache_dir": str(tmp / "cache"), **web})
    return create_app(cfg, web_settings(cfg), ctx.catalog, vault=ctx.vault, codecs_factory=lambda: ctx.codecs)


def _status(client) -> str:
    return client.get("/api/status").get_json()["decoder"]


def test_decoder_loads_on_a_background_thread_at_start(coll):
    _, _, ids, codec = coll
    codec.loads = 0
    codec.release.clear()
    client = _app(coll).test_client()
    assert _status(client) == "warming"  # the app answers while the decoder loads
    assert client.get("/").status_code == 200
    codec.release.set()
    deadline = time.monotonic() + 10
    while _status(client) != "ready" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _status(client) == "ready" and codec.loads == 1
    r = client.get(f"/api/files/{ids['forest']}/decoded")
    assert r.status_code == 200 and r.headers["X-Archiver-Source"] == "reconstruction"
    assert codec.loads == 1


def test_warm_decoder_off_loads_nothing_at_start(coll):
    _, _, _, codec = coll
    codec.loads = 0
    client = _app(coll, warm_decoder=False).test_client()
    time.sleep(0.5)
    assert codec.loads == 0 and _status(client) == "cold"


def test_warm_decoder_must_be_true_or_false(coll):
    from archiver.errors import UsageError

    with pytest.raises(UsageError, match="warm_decoder"):
        web_settings(Config(web={"warm_decoder": "yes"}))


def test_waitress_queue_depth_warnings_are_folded_not_one_per_request(coll):
    from waitress.task import ThreadedTaskDispatcher

    server = make_server(_app(coll, warm_decoder=False), web_settings(Config(web={"port": 0})))
    try:
        assert server.adj.threads == DEFAULT_THREADS
    finally:
        server.close()
    quiet_queue_warnings().reset()
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    waitress_log = logging.getLogger("waitress")
    waitress_log.addHandler(handler)
    try:
        busy = ThreadedTaskDispatcher()  # no thread free: every task added waits, and waitress warns
        for i in range(50):
            busy.add_task(object())
        waitress_log.error("a real error")  # not folded, not hidden
    finally:
        waitress_log.removeHandler(handler)
    queue = [r for r in seen if r.name == "waitress.queue"]
    assert len(queue) == 1, [r.getMessage() for r in queue]
    assert "queue depth up to 1" in queue[0].getMessage()
    assert [r.getMessage() for r in seen if r.name == "waitress"] == ["a real error"]
