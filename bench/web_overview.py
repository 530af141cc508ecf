#!/usr/bin/env python3
"""How fast the dashboard answers on a big catalog (issue 14: the overview in under 1 s with
100,000 rows on this machine).

Not a test: a measurement to quote in docs/web.md. It builds a synthetic SQLite catalog (kept
and reused if it already has the rows asked for, so a rerun only measures): ``--rows`` file
versions over three roots and 60 top folders, six rules, three codecs, 90% committed, a third
vaulted with expiries over the next 90 days, commits spread over a year, about two events per
row with failures and fallbacks among them, and a queue. Then it times each page through the
real Flask app (Jinja rendering included; the catalog is opened once, as ``archiver serve``
does) and once over HTTP through waitress.

    nice -n 19 python bench/web_overview.py --rows 100000 [--db /tmp/web-bench.sqlite] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RULES = [("textures", "diffusion", "dlc"), ("photos-lossless", "lossless", "jxl-jpeg"), ("graphics", "lossless", "axl"),
         ("faces", "lossless", "jxl-jpeg"), ("evidence", "keep", None), ("default", "lossless", "jxl-jpeg")]


def build(url: str, rows: int, seed: int = 0) -> float:
    """Fill an empty catalog with ``rows`` synthetic file versions; returns seconds taken."""
    from sqlalchemy import insert

    from archiver.catalog.db import open_catalog
    from archiver.catalog.models import Event, FileVersion, WorkQueue

    rng = random.Random(seed)
    t0 = time.time()
    cat = open_catalog(url, create=True)
    now = dt.datetime(2026, 11, 26)
    roots = ["/srv/photos", "/mnt/nas/archive", "/home/ann/Pictures"]
    files, events = [], []
    for i in range(1, rows + 1):
        root = roots[i % 3]
        folder = f"{2000 + i % 20}-{rng.choice(['trips', 'family', 'scans', 'work'])}"
        path = f"{root}/{folder}/sub{i % 7}/img_{i:07d}.jpg"
        rule, action, codec = RULES[rng.randrange(len(RULES))]
        size = rng.randint(200_000, 8_000_000)
        r = rng.random()
        state = "committed" if r < 0.90 else "skipped" if r < 0.95 else "failed" if r < 0.98 else "classified"
        at = now - dt.timedelta(days=rng.random() * 365)
        row = dict(id=i, path=path, root=root, size=size, sha256=f"{i:064x}", format="JPEG", width=4000, height=3000,
                   policy="default", rule=rule, action=action, state=state, created_at=at, updated_at=at,
                   reasons=[f"rule '{rule}' -> {action}"])
        ev = [dict(file_id=i, path=path, at=at, kind="discovered", to_state="discovered")]
        if state == "committed":
            vaulted = rng.random() < 0.33
            comp = None if action == "keep" else int(size * (0.08 if action == "diffusion" else 0.8))
            row.update(codec=codec, compressed_path=None if comp is None else path + ".x", compressed_size=comp,
                       committed_at=at, original_status="kept" if action == "keep" else "removed",
                       disposition="keep" if action == "keep" else "vault" if vaulted else "replace",
                       vault_path=f"/var/vault/{i:064x}" if vaulted and action != "keep" else None,
                       vault_expires_at=now + dt.timedelta(days=rng.random() * 90) if vaulted else None,
                       psnr=rng.uniform(28, 40) if action == "diffusion" else None)
            if rng.random() < 0.05:
                ev.append(dict(file_id=i, path=path, at=at, kind="fallback", from_state="verified", to_state="classified",
                               detail={"action": "lossless", "reasons": ["quality guard: PSNR 23.1dB below the floor 24.0dB",
                                                                         "fell back to lossless"]}))
            ev.append(dict(file_id=i, path=path, at=at, kind="committed", from_state="verified", to_state="committed"))
        elif state in ("failed", "skipped"):
            err = "OSError: [Errno 5] Input/output error" if state == "failed" else "corrupt or truncated image"
            row["error"] = err
            ev.append(dict(file_id=i, path=path, at=at, kind="failed" if state == "failed" else "bad_input",
                           to_state=state, detail={"error": err}))
        files.append(row)
        events.extend(ev)
    queue = [dict(path=f"/srv/photos/incoming/new_{k:05d}.jpg", root="/srv/photos",
                  state=rng.choice(["pending", "pending", "claimed", "done", "failed"])) for k in range(1000)]
    for data in (files, events):  # executemany needs the same keys in every row
        keys = set().union(*data)
        for d in data:
            for k in keys - d.keys():
                d[k] = None
    with cat.engine.begin() as conn:
        for table, data in ((FileVersion, files), (Event, events), (WorkQueue, queue)):
            for k in range(0, len(data), 5000):
                conn.execute(insert(table), data[k:k + 5000])
    with cat.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    cat.close()
    return time.time() - t0


def timed(fn, repeat: int) -> dict:
    """Wall time, and this process's CPU time (all threads): on a machine shared with other
    work the wall time includes waiting for a core; the CPU time is what the page itself costs,
    which is the wall time on an idle machine (the page's work is one thread)."""
    times, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"first_s": round(times[0], 4), "median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4),
            "cpu_median_s": round(statistics.median(cpu), 4), "cpu_max_s": round(max(cpu), 4), "runs": repeat}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--db", default=os.path.join(tempfile.gettempdir(), "archiver-web-bench.sqlite"))
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("ARCHIVER_HOME", tempfile.mkdtemp(prefix="archiver-web-bench-"))
    from sqlalchemy import func, select

    from archiver.catalog.db import open_catalog
    from archiver.catalog.models import FileVersion
    from archiver.config import Config
    from archiver.app.web.app import create_app
    from archiver.app.web.server import make_server, url_of
    from archiver.app.web.settings import web_settings

    url = f"sqlite:///{a.db}"
    built = None
    cat = open_catalog(url, create=True)
    with cat.session() as s:
        have = s.execute(select(func.count()).select_from(FileVersion)).scalar_one()
    if have != a.rows:
        cat.close()
        for suffix in ("", "-wal", "-shm", ".created"):  # a new catalog, and the record of the old one
            Path(a.db + suffix).unlink(missing_ok=True)
        built = round(build(url, a.rows), 1)
        cat = open_catalog(url)
    cfg = Config(catalog_url=url, web={"warm_decoder": False})  # no codec to load: only the pages are timed
    settings = web_settings(cfg, port=0)
    t = time.perf_counter()
    from archiver.app.web.plot import bytes_svg

    bytes_svg([])  # what archiver serve does at start (imports matplotlib)
    app = create_app(cfg, settings, cat)
    start_s = time.perf_counter() - t
    client = app.test_client()

    def get(path):
        def run():
            r = client.get(path)
            assert r.status_code == 200, (path, r.status_code, r.data[:300])
        return run

    from archiver.app.web import plot

    pages = app.extensions["archiver.views"]

    def cold():  # what the first visit after a change pays: every sum and the plot anew
        pages.sums.clear()
        plot._svg.cache_clear()
        get("/")()

    results = {}
    results["overview, cold (sums and plot computed)"] = timed(cold, a.repeat)
    results["overview"] = timed(get("/"), a.repeat)
    results["api/overview"] = timed(get("/api/overview"), a.repeat)
    results["files, first page"] = timed(get("/files"), a.repeat)
    results["files, first page, filter choices not cached"] = timed(lambda: (pages.choices.clear(), get("/files")()),
                                                                    a.repeat)
    with cat.session() as s:
        mid = s.execute(select(func.min(FileVersion.id))).scalar_one() + a.rows // 2
    results["files, a page in the middle (keyset)"] = timed(get(f"/files?before={mid}"), a.repeat)
    results["files, rule=textures"] = timed(get("/files?rule=textures"), a.repeat)
    results["files, state=failed"] = timed(get("/files?state=failed"), a.repeat)
    results["files, path prefix /mnt/nas/archive/2005"] = timed(get("/files?path=/mnt/nas/archive/2005"), a.repeat)
    results["files, name fragment img_0099"] = timed(get("/files?path=img_0099"), a.repeat)
    results["files, since 2026-11-01"] = timed(get("/files?since=2026-11-01"), a.repeat)
    results["files grid, first page"] = timed(get("/files?view=grid"), a.repeat)
    results["files grid, a page in the middle (keyset)"] = timed(get(f"/files?view=grid&before={mid}"), a.repeat)
    results["files grid, rule=textures"] = timed(get("/files?view=grid&rule=textures"), a.repeat)
    results["files grid, codec=jxl-jpeg, page in the middle"] = timed(
        get(f"/files?view=grid&codec=jxl-jpeg&before={mid}"), a.repeat)
    results["file page"] = timed(get(f"/files/{mid}"), a.repeat)

    # once over real HTTP (waitress), as a browser gets it
    import threading
    import urllib.request

    pages.sums.clear()
    plot._svg.cache_clear()
    server = make_server(app, settings)
    threading.Thread(target=server.run, daemon=True).start()
    base = url_of(server, settings).rstrip("/")
    results["overview over HTTP (waitress), first of the runs cold"] = timed(lambda: urllib.request.urlopen(base + "/").read(), a.repeat)
    server.close()

    report = {"rows": a.rows, "db": a.db, "built_s": built, "app_start_s": round(start_s, 3), "pages": results,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]}}
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{a.rows} rows ({a.db}{', built in %.0f s' % built if built else ', reused'}); "
              f"app start {start_s:.2f} s; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for k, v in results.items():
            print(f"  {k:<52} wall median {v['median_s'] * 1000:7.1f} ms  first {v['first_s'] * 1000:7.1f} ms  "
                  f"max {v['max_s'] * 1000:7.1f} ms | CPU median {v['cpu_median_s'] * 1000:7.1f} ms  "
                  f"max {v['cpu_max_s'] * 1000:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
