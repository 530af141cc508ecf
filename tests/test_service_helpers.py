"""Shared helpers for the service's end-to-end tests (daemon and migrate as real subprocesses).

"Archived exactly once or untouched, none lost" is checked against both the disk and the
catalog by :func:`check_exactly_once`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

FAST_POLICY = """\
version: 1
name: fast-test
defaults:
  original: replace
rules:
  - name: keepers
    when:
      path: ["**/keep/**"]
    action: keep
default:
  action: lossless
"""

SIDE_EXTS = (".axl", ".jxl", ".dlc")


def png_bytes(seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    # smooth-ish content so lossless JPEG XL really is smaller than the PNG
    base = rng.integers(0, 255, (size // 4 + 1, size // 4 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def archiver_in_subprocess(config: Path, env: dict):
    """``run(*args)``: ``python -m archiver ARGS --config CONFIG`` in a new process with ``env``,
    as a user runs it (no terminal, no stdin); fails the test on any traceback."""

    def run(*args) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "archiver", *map(str, args), "--config", str(config)],
                           capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
        assert "Traceback" not in r.stderr, r.stderr
        return r

    return run


def write_config(path: Path, **settings) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(settings))
    return path


def setup_env(tmp_path: Path, *, roots=None, **settings) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    policy = tmp_path / "policy.yaml"
    policy.write_text(FAST_POLICY)
    cfg = dict(roots=[str(r) for r in (roots or [root])], settle_seconds=0.4, rescan_seconds=3600, workers=1,
               policy=str(policy), metrics_port=0)
    cfg.update(settings)
    cfg_path = write_config(tmp_path / "config.yaml", **cfg)
    env = dict(os.environ, ARCHIVER_HOME=str(home), ARCHIVER_CONFIG=str(cfg_path), PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    return {"home": home, "root": root, "config": cfg_path, "env": env, "settings": cfg, "tmp": tmp_path}


class Daemon:
    """``archiver daemon`` as a subprocess with JSON logs captured to a file."""

    def __init__(self, e: dict, *, executor: str = "thread", extra_env: dict | None = None, wrap=None):
        """``wrap(argv) -> argv``: run the daemon under something (e.g. its own mount namespace)."""
        self.e = e
        self.log_path = e["tmp"] / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        env = dict(e["env"], **(extra_env or {}))
        argv = [sys.executable, "-m", "archiver", "daemon", "--config", str(e["config"]), "--json-logs",
                "--executor", executor]
        self.proc = subprocess.Popen(wrap(argv) if wrap else argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def logs(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_log(self, msg: str, timeout: float = 60, count: int = 1) -> list[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hits = [d for d in self.logs() if d.get("msg") == msg]
            if len(hits) >= count:
                return hits
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before '{msg}':\n{self.log_path.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"no '{msg}' x{count} within {timeout}s:\n{self.log_path.read_text()[-4000:]}")

    def ready(self, timeout: float = 60) -> "Daemon":
        self.wait_log("daemon started", timeout)
        self.wait_log("reconciliation scan done", timeout)
        return self

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()


def wait_until(pred, timeout: float = 60, interval: float = 0.05, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def _catalog_url(home: Path, url: str | None) -> str | None:
    """The catalog to read: ``url`` (a shared PostgreSQL catalog) or the state dir's SQLite file."""
    if url:
        return url
    db = home / "catalog.sqlite"
    return f"sqlite:///{db}" if db.exists() else None


def catalog_rows(home: Path, url: str | None = None) -> list[dict]:
    from archiver.catalog.db import Catalog
    from archiver.catalog.models import FileVersion

    url = _catalog_url(home, url)
    if url is None:
        return []
    from sqlalchemy import select

    from sqlalchemy.exc import OperationalError, ProgrammingError

    from archiver.errors import CatalogError

    try:
        cat = Catalog(url, migrate_schema=False)
    except CatalogError:  # the command under test is creating it right now (an empty file, no schema yet)
        return []
    try:
        with cat.session() as s:
            return [r.to_dict() for r in s.scalars(select(FileVersion).order_by(FileVersion.id))]
    except (OperationalError, ProgrammingError) as e:
        if "file_versions" in str(e):  # the command under test has not created the tables yet
            return []
        raise
    finally:
        cat.close()


def queue_rows(home: Path, url: str | None = None) -> list[dict]:
    from archiver.catalog.db import Catalog
    from archiver.catalog.queue import WorkQueue

    url = _catalog_url(home, url)
    if url is None:
        return []
    from archiver.errors import CatalogError

    try:
        cat = Catalog(url, migrate_schema=False)
    except CatalogError:  # being created right now
        return []
    try:
        return WorkQueue.for_catalog(cat).rows()
    finally:
        cat.close()


def committed_paths(home: Path, url: str | None = None) -> set[str]:
    return {r["path"] for r in catalog_rows(home, url) if r["state"] == "committed"}


def check_exactly_once(home: Path, originals: dict[str, bytes], *, require_all: bool = False,
                       url: str | None = None) -> dict:
    """Every original is either archived exactly once (gone from disk, one sidecar that restores
    to its exact bytes, one committed catalog row pointing at it) or untouched (same bytes, no
    sidecar, no committed row). Returns counts."""
    from archiver.codecs.lossless import format as lossless

    rows = catalog_rows(home, url)
    by_path: dict[str, list[dict]] = {}
    for r in rows:
        by_path.setdefault(r["path"], []).append(r)
    archived = untouched = 0
    for path, data in originals.items():
        p = Path(path)
        sidecars = [p.with_name(p.name + ext) for ext in SIDE_EXTS]
        sidecars = [s for s in sidecars if s.exists()] + [s for s in p.parent.glob(p.name + ".*.*")
                                                           if s.suffix in SIDE_EXTS]
        committed = [r for r in by_path.get(path, []) if r["state"] == "committed"]
        in_progress = [r for r in by_path.get(path, []) if r["state"] in ("discovered", "classified", "encoded", "verified")]
        assert not in_progress, f"{path}: left in progress: {in_progress}"
        if p.exists() and not committed:
            assert p.read_bytes() == data, f"{path}: original changed"
            assert not sidecars, f"{path}: stray compressed file {sidecars}"
            untouched += 1
            continue
        assert len(committed) == 1, f"{path}: {len(committed)} committed rows"
        row = committed[0]
        if row["action"] == "keep":
            assert p.read_bytes() == data and not sidecars
        else:
            assert not p.exists(), f"{path}: original still present after commit"
            assert [str(s) for s in sidecars] == [row["compressed_path"]], f"{path}: sidecars {sidecars}"
            back = lossless.restore(Path(row["compressed_path"]).read_bytes())
            if row["restore_exact"] == "bytes":
                assert back == data, f"{path}: restore differs"
            else:  # PNG re-encoded by another encoder: the pixels (and metadata) are what is exact
                assert row["restore_exact"] == "pixels" and lossless.same_pixels(back, data), f"{path}: restore differs"
        archived += 1
    leftovers = [str(x) for x in home.parent.rglob(".archiver-tmp-*")]
    assert not leftovers, f"temp files left: {leftovers}"
    if require_all:
        assert untouched == 0, f"{untouched} file(s) not archived"
    return {"archived": archived, "untouched": untouched}
