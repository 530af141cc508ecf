#!/usr/bin/env python3
"""Scaling measurements for docs/scale.md: Ray nodes, daemons on one PostgreSQL catalog, and the
catalog's own capacity. Not a test: numbers to quote, each run on a throw-away PostgreSQL cluster
(``initdb``/``pg_ctl`` on PATH) and, for Ray, a throw-away local Ray cluster on loopback.

    python bench/scale.py catalog --files 2000 --threads 1 4
    python bench/scale.py ray --images 40 --size 256           # 1 node, then 2 nodes
    python bench/scale.py daemons --images 40 --size 256       # 1 daemon, then 2 daemons
    python bench/scale.py all --json > scale.json

Ray nodes and daemons here are processes on one machine, each limited to one CPU (Ray
``--num-cpus 1``; daemon ``workers: 1``): the ratios show how the work spreads, and on a
machine with C cores they cannot exceed C (the load average during the run is reported, since
other processes compete for the same cores). Images are generated (smooth noise, PNG) and
archived by a policy that sends every file to the diffusion codec with the embedded tiny model,
so the per-image cost is the real encode + decode-check + catalog work.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

POLICY = """\
version: 1
name: scale-bench
defaults:
  original: replace
  floor: {min_psnr: 0.0, min_ms_ssim: 0.0, min_region_psnr: 0.0}
rules:
  - name: photos
    when:
      path: ["**"]
    action: diffusion
    allow_generative: true
    bpp: 0.3
default:
  action: lossless
"""


# -- helpers -----------------------------------------------------------------------------------
class Postgres:
    """A throw-away PostgreSQL cluster (archiver.testing.postgres, as the tests start one), but with
    fsync on: the catalog's real cost includes its commits reaching the disk."""

    def __init__(self):
        from archiver.testing.postgres import ClusterUnavailable, start_cluster

        try:
            self.server, self.stop = start_cluster("scale-pg-", fsync=True, port=20000 + (os.getpid() * 7) % 20000)
        except ClusterUnavailable as e:
            raise SystemExit(str(e)) from None

    def new_db(self) -> str:
        from sqlalchemy import text

        from archiver.catalog.db import make_engine

        name = f"b{os.urandom(4).hex()}"
        eng = make_engine(self.server)
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text(f"CREATE DATABASE {name}"))
        eng.dispose()
        return self.server.replace("/postgres?", f"/{name}?")



def _images(n: int, size: int) -> list[bytes]:
    import numpy as np
    from PIL import Image

    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        base = rng.integers(0, 255, (size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.BICUBIC)
        b = io.BytesIO()
        img.save(b, "PNG")
        out.append(b.getvalue())
    return out


def _drop(root: Path, images: list[bytes]) -> list[str]:
    paths = []
    for i, data in enumerate(images):
        p = root / f"d{i % 4}" / f"img{i:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        paths.append(str(p))
    return paths


def _setup(work: Path, url: str, name: str, **settings) -> dict:
    from test_service_helpers import setup_env

    (work / name).mkdir(parents=True)
    e = setup_env(work / name, catalog_url=url, **settings)
    e["tmp"].joinpath("policy.yaml").write_text(POLICY)
    return e


def _committed(url: str) -> int:
    from sqlalchemy import text

    from archiver.catalog.db import make_engine

    eng = make_engine(url)
    try:
        with eng.connect() as c:
            return int(c.execute(text("select count(*) from file_versions where state = 'committed'")).scalar())
    except Exception:
        return 0
    finally:
        eng.dispose()


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# -- Ray: 1 node vs 2 nodes --------------------------------------------------------------------
def bench_ray(pg: Postgres, n: int, size: int) -> dict:
    from ray_cluster import RayCluster

    images = _images(n, size)
    runs = []
    for nodes in (1, 2):
        work = Path(tempfile.mkdtemp(prefix="scale-ray-"))
        homes = {"head": work / "head-home", "node2": work / "node2-home"}
        for h in homes.values():
            h.mkdir()
        cluster = RayCluster(homes).start(nodes)
        try:
            url = pg.new_db()
            e = _setup(work, url, "driver", vault_dir=str(work / "vault"))
            _drop(e["root"], images)
            env = dict(cluster.env, ARCHIVER_HOME=str(e["home"]), ARCHIVER_CONFIG=str(e["config"]))
            load0 = _load()
            t0 = time.time()
            r = subprocess.run([sys.executable, "-m", "archiver", "migrate", str(e["root"]), "--executor", "ray",
                                "--workers", str(2 * nodes), "--json"], env=env, capture_output=True, text=True)
            wall = time.time() - t0
            rep = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {"error": r.stderr[-1500:]}
            runs.append({"nodes": nodes, "images": n, "size": size, "rc": r.returncode, "wall_seconds": round(wall, 2),
                         "by_outcome": rep.get("by_outcome"), "images_per_hour": round(n / wall * 3600, 1),
                         "load_before": load0, "load_after": _load()})
        finally:
            cluster.stop()
            shutil.rmtree(work, ignore_errors=True)
    return {"runs": runs, "ratio_2_to_1": round(runs[1]["images_per_hour"] / runs[0]["images_per_hour"], 2)}


# -- daemons: 1 vs 2 on one catalog -----------------------------------------------------------
def bench_daemons(pg: Postgres, n: int, size: int) -> dict:
    from test_service_helpers import Daemon

    images = _images(n, size)
    runs = []
    for count in (1, 2):
        work = Path(tempfile.mkdtemp(prefix="scale-d-"))
        url = pg.new_db()
        root = work / "shared" / "photos"
        root.mkdir(parents=True)
        (root / "seed.txt").write_text("")  # a non-empty root gets its marker at the first check
        ds = []
        try:
            for k in range(count):
                e = _setup(work, url, f"node{k}", roots=[str(root)], node_name=f"node{k}", workers=1,
                           vault_dir=str(work / "shared" / "vault"), settle_seconds=0.5, lease_seconds=30)
                ds.append(Daemon(e, executor="process").ready(120))
            # let every worker process load its models before the clock starts: one warm-up file each
            warm = _drop(root / "warmup", _images(count, 64))
            deadline = time.time() + 600
            while _committed(url) < len(warm) and time.time() < deadline:
                time.sleep(0.2)
            load0 = _load()
            t0 = time.time()
            _drop(root, images)
            while _committed(url) < len(warm) + n and time.time() < deadline + 1800:
                time.sleep(0.2)
            wall = time.time() - t0
            per = [len([x for x in d.logs() if x.get("msg") == "handled"]) - 0 for d in ds]
            runs.append({"daemons": count, "images": n, "size": size, "wall_seconds": round(wall, 2),
                         "images_per_hour": round(n / wall * 3600, 1), "handled_per_daemon": per,
                         "load_before": load0, "load_after": _load()})
        finally:
            for d in ds:
                d.stop(120)
            shutil.rmtree(work, ignore_errors=True)
    return {"runs": runs, "ratio_2_to_1": round(runs[1]["images_per_hour"] / runs[0]["images_per_hour"], 2)}


# -- the catalog's own capacity ---------------------------------------------------------------
def bench_catalog(pg: Postgres, files: int, threads_list: list[int]) -> dict:
    """The catalog work of one archived file without the image work: enqueue, claim, the seven
    transitions of a lossless replace (each its own transaction, as ``archive_file`` does) and
    complete — from T threads, each with its own engine (as T worker processes would)."""
    from sqlalchemy import text

    from archiver.catalog import queries as q
    from archiver.catalog.db import Catalog
    from archiver.catalog.models import (CLASSIFIED, COMMITTED, DISCOVERED, ENCODED, ORIG_REMOVED, VERIFIED,
                                         FileVersion)
    from archiver.catalog.queue import WorkQueue

    out = []
    for threads in threads_list:
        url = pg.new_db()
        Catalog(url, create=True).close()  # schema
        per = files // threads
        errors: list[str] = []

        def one(k: int) -> None:
            cat = Catalog(url, migrate_schema=False)
            wq = WorkQueue.for_catalog(cat)
            me = f"bench{k}:1:1"
            try:
                wq.enqueue_many([(f"/data/t{k}/f{i:07d}.png", "/data") for i in range(per)])
                while True:
                    items = wq.claim(me, 4, roots=["/data"])
                    if not items:
                        return
                    for it in items:
                        with cat.session() as s:
                            row = q.transition(s, FileVersion(path=it.path), DISCOVERED, kind="discovered",
                                               size=123456, mtime_ns=1, sha256="a" * 64, format="PNG", width=768,
                                               height=512, phash="f" * 16, dhash="e" * 16)
                            fid = row.id
                        for to, kw in ((CLASSIFIED, dict(policy="default", rule="photos", action="lossless",
                                                         reasons=["texture 0.71"])),
                                       (CLASSIFIED, dict(kind="write_intent", compressed_path=it.path + ".jxl",
                                                         codec="jxl")),
                                       (ENCODED, dict(compressed_sha256="b" * 64, compressed_size=65432)),
                                       (VERIFIED, dict(psnr=99.0)),
                                       (COMMITTED, dict(kind="committed", disposition="replace",
                                                        original_status="present")),
                                       (COMMITTED, dict(kind="original_removed", original_status=ORIG_REMOVED))):
                            kind = kw.pop("kind", None)
                            with cat.session() as s:
                                q.transition(s, s.get(FileVersion, fid), to, kind=kind, **kw)
                        wq.complete(it.id)
            except Exception as e:  # reported, not hidden
                errors.append(f"{type(e).__name__}: {e}")
            finally:
                cat.close()

        load0 = _load()
        t0 = time.time()
        ts = [threading.Thread(target=one, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.time() - t0
        from archiver.catalog.db import make_engine

        eng = make_engine(url)
        with eng.connect() as c:
            done = int(c.execute(text("select count(*) from file_versions where state='committed'")).scalar())
            sizes = {t: int(c.execute(text(f"select pg_total_relation_size('{t}')")).scalar())
                     for t in ("file_versions", "events", "work_queue")}
            events = int(c.execute(text("select count(*) from events")).scalar())
        eng.dispose()
        out.append({"threads": threads, "files": done, "seconds": round(wall, 2),
                    "files_per_second": round(done / wall, 1), "transactions_per_second": round(done * 9 / wall, 1),
                    "events_per_file": round(events / max(1, done), 2),
                    "bytes_per_file": {t: round(v / max(1, done)) for t, v in sizes.items()},
                    "bytes_per_file_total": round(sum(sizes.values()) / max(1, done)),
                    "errors": errors[:3], "load_before": load0, "load_after": _load()})
    return {"runs": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["catalog", "ray", "daemons", "all"])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below on a timeout
    pg = Postgres()
    res: dict = {"cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        if a.what in ("catalog", "all"):
            res["catalog"] = bench_catalog(pg, a.files, a.threads)
            print(json.dumps(res["catalog"]), file=sys.stderr, flush=True)
        if a.what in ("ray", "all"):
            res["ray"] = bench_ray(pg, a.images, a.size)
            print(json.dumps(res["ray"]), file=sys.stderr, flush=True)
        if a.what in ("daemons", "all"):
            res["daemons"] = bench_daemons(pg, a.images, a.size)
    finally:
        pg.stop()
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
