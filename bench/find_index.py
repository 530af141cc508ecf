#!/usr/bin/env python3
"""``archiver find`` at a million rows (issue 28): the near-hash lookup through the indexed pHash
bands (``archiver.catalog.duplicates.near``), timed on SQLite and on a throw-away PostgreSQL.

A catalog is made with archiver's own schema (migrations up to 0008), filled with ``--rows``
synthetic committed rows whose pHash/dHash are random 64-bit values, each bit drawn with the
frequency it has in real pictures (``--bits-from``: a folder of pictures, e.g. train/, whose pHash
bits are counted; default: fair coins). For each of ``--queries`` query hashes, near copies are planted at known distances
(pHash 0..14, dHash 0..13); every query must find all of them (the index misses nothing within
the thresholds), and its time is taken in a fresh session, as ``archiver find`` runs it.

    nice -n 5 python bench/find_index.py --backend sqlite --rows 1000000 --out docs/bench/find-index-sqlite.json
    nice -n 5 python bench/find_index.py --backend postgres --rows 1000000 --out docs/bench/find-index-postgres.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from archiver import likeness
from archiver.catalog import duplicates as dup
from archiver.catalog.db import make_engine, open_catalog

COLUMNS = ("path", "root", "state", "phash", "dhash", "phash_b0", "phash_b1", "phash_b2", "phash_b3", "created_at",
           "updated_at", "rule", "action", "size")
#: the distances at which near copies of each query are planted (pHash, dHash)
PLANTED = ((0, 0), (2, 3), (6, 8), (10, 11), (14, 13))


def random_hashes(rng, n: int, freq: np.ndarray | None) -> np.ndarray:
    """``n`` 64-bit hashes, bit ``i`` (most significant first) set with probability ``freq[i]``."""
    p = np.full(64, 0.5) if freq is None else np.asarray(freq, dtype=float)
    bits = rng.random((n, 64)) < p
    weights = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def bit_frequencies(folder: Path) -> list[float]:
    """How often each pHash bit (most significant first) is set over the pictures in ``folder``."""
    from archiver.imageio import load_image

    counts, n = np.zeros(64), 0
    for f in sorted(folder.rglob("*")):
        if f.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"):
            continue
        v = likeness.as_int(likeness.hashes(load_image(f.read_bytes()).rgb)[0])
        counts += [(v >> (63 - i)) & 1 for i in range(64)]
        n += 1
    print(f"  bit frequencies from {n} pictures", file=sys.stderr, flush=True)
    return (counts / max(1, n)).tolist()


def flip(rng, h: int, k: int) -> int:
    for b in rng.choice(64, size=k, replace=False):
        h ^= 1 << int(b)
    return h


def hx(v: int) -> str:
    return f"{int(v):016x}"


def rows(ph: np.ndarray, dh: np.ndarray, start: int):
    now = dt.datetime(2026, 12, 5)
    for i in range(len(ph)):
        p = hx(ph[i])
        yield (f"/bench/{(start + i) // 1000}/{start + i}.jpg", "/bench", "committed", p, hx(dh[i]), *likeness.bands(p),
               now, now, "bench", "lossless", 1000)


def fill_sqlite(engine, ph, dh, batch=50_000) -> None:
    sql = text(f"INSERT INTO file_versions ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})")
    for s in range(0, len(ph), batch):
        with engine.begin() as c:
            c.execute(sql, [dict(zip(COLUMNS, r)) for r in rows(ph[s:s + batch], dh[s:s + batch], s)])
        print(f"  {min(s + batch, len(ph))} rows", file=sys.stderr, flush=True)


def fill_postgres(engine, ph, dh, batch=200_000) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for s in range(0, len(ph), batch):
            with cur.copy(f"COPY file_versions ({', '.join(COLUMNS)}) FROM STDIN") as cp:
                for r in rows(ph[s:s + batch], dh[s:s + batch], s):
                    cp.write_row(r)
            raw.commit()
            print(f"  {min(s + batch, len(ph))} rows", file=sys.stderr, flush=True)
        raw.commit()
        pg = raw.driver_connection
        pg.autocommit = True  # what autovacuum does after a bulk load: statistics and the visibility
        pg.execute("VACUUM ANALYZE file_versions")  # map (an index-only scan needs it)
        pg.autocommit = False  # the connection goes back to the pool
    finally:
        raw.close()


def start_postgres() -> tuple[str, callable]:
    """A throw-away cluster on a Unix socket (archiver.testing.postgres, as the tests start one)."""
    from archiver.testing.postgres import ClusterUnavailable, start_cluster

    try:
        return start_cluster("archiver-bench-pg-")
    except ClusterUnavailable as e:
        sys.exit(str(e))


def plan(engine, backend: str, ph: str) -> list[str]:
    per_band = likeness.probes(ph, likeness.PHASH_MAX)
    q = " UNION ALL ".join(f"SELECT id, phash_b0, phash_b1, phash_b2, phash_b3 FROM file_versions WHERE phash_b{i} IN ({', '.join(map(str, v))})"
                           for i, v in enumerate(per_band))
    with engine.connect() as c:
        if backend == "sqlite":
            return [str(r[-1]) for r in c.execute(text("EXPLAIN QUERY PLAN " + q))]
        dist = " + ".join(f"bit_count((u.phash_b{i} # {b})::bit(16))" for i, b in enumerate(likeness.bands(ph)))
        q = f"SELECT * FROM ({q}) u WHERE {dist} <= {likeness.PHASH_MAX}"
        with c.begin():
            c.execute(text("SET LOCAL enable_bitmapscan = off"))  # as duplicates.near does
            c.execute(text("SET LOCAL enable_seqscan = off"))
            return [r[0] for r in c.execute(text("EXPLAIN " + q))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--bits-from", type=Path, help="a folder of pictures whose pHash bit frequencies to draw with")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    freq = bit_frequencies(a.bits_from) if a.bits_from else None
    n_planted = a.queries * len(PLANTED)
    ph = random_hashes(rng, a.rows - n_planted, freq)
    dh = random_hashes(rng, a.rows - n_planted, None)
    queries = [(int(ph[i]), int(dh[i])) for i in rng.choice(len(ph), a.queries, replace=False)]
    planted_p, planted_d = [], []
    for qp, qd in queries:
        for kp, kd in PLANTED:
            planted_p.append(flip(rng, qp, kp))
            planted_d.append(flip(rng, qd, kd))
    ph = np.concatenate([ph, np.array(planted_p, dtype=np.uint64)])
    dh = np.concatenate([dh, np.array(planted_d, dtype=np.uint64)])
    stop = None
    tmp = tempfile.mkdtemp(prefix="archiver-bench-find-")
    try:
        if a.backend == "sqlite":
            url = f"sqlite:///{tmp}/catalog.sqlite"
        else:
            server, stop = start_postgres()
            eng = make_engine(server)
            with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("CREATE DATABASE bench"))
            eng.dispose()
            url = server.replace("/postgres?", "/bench?")
            os.environ["ARCHIVER_HOME"] = tmp  # the server catalog's creation marker goes here, not the user's
        cat = open_catalog(url, create=True)
        t0 = time.time()
        (fill_sqlite if a.backend == "sqlite" else fill_postgres)(cat.engine, ph, dh)
        fill_s = time.time() - t0
        if a.backend == "sqlite":
            with cat.engine.begin() as c:
                c.execute(text("ANALYZE"))
        times, found = [], []
        for qp, qd in queries:
            t = time.perf_counter()
            with cat.session() as s:
                hits = dup.near(s, hx(qp), hx(qd), limit=1000)
                got = {(r.phash, r.dhash) for r, _, _ in hits}
            times.append(time.perf_counter() - t)
            want = {(hx(p), hx(d)) for p, d in zip(planted_p, planted_d)
                    if likeness.distance(hx(p), hx(qp)) <= likeness.PHASH_MAX and likeness.distance(hx(d), hx(qd)) <= likeness.DHASH_MAX}
            found.append(len(want - got) == 0)
        out = {"backend": a.backend, "rows": a.rows, "queries": a.queries,
               "hash_bits": f"pHash bits drawn with their frequencies in {a.bits_from}" if a.bits_from else "fair coins",
               "bit_frequencies": freq,
               "thresholds": {"phash_max": likeness.PHASH_MAX, "dhash_max": likeness.DHASH_MAX},
               "probes_per_band": len(likeness.band_probes(0, likeness.PHASH_MAX // likeness.BANDS)),
               "fill_seconds": round(fill_s, 1), "first_query_s": round(times[0], 4),
               "median_s": round(statistics.median(times), 4), "p95_s": round(sorted(times)[int(0.95 * (len(times) - 1))], 4),
               "max_s": round(max(times), 4), "all_planted_found": all(found), "target_s": 0.5,
               "plan": plan(cat.engine, a.backend, hx(queries[0][0])),
               "machine": {"cpus": os.cpu_count(), "note": "shared 2-core machine, other work running"}}
        cat.close()
    finally:
        if stop:
            stop()
        shutil.rmtree(tmp, ignore_errors=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "plan"}, indent=1))
    return 0 if out["all_planted_found"] and out["max_s"] < out["target_s"] else 1


if __name__ == "__main__":
    sys.exit(main())
