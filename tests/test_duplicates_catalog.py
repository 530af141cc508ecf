"""The catalog's side of issue 28: migration 0008 fills the pHash bands of existing rows (and
downgrades), the band lookup finds every hash within the distance on SQLite and PostgreSQL and
reads the band indexes rather than the table."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import text

from archiver import likeness
from archiver.catalog import duplicates as dup
from archiver.catalog.db import current_revision, head_revision, open_catalog
from archiver.catalog.models import FileVersion


def _flip(h: str, k: int, rng) -> str:
    v = int(h, 16)
    for b in rng.sample(range(64), k):
        v ^= 1 << b
    return f"{v:016x}"


def test_migration_0008_fills_the_bands_of_rows_that_have_a_phash(tmp_path):
    from alembic import command

    from archiver.catalog.db import _alembic_config, make_engine

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    eng = make_engine(url)
    with eng.begin() as conn:
        command.upgrade(_alembic_config(conn), "0007")
        conn.execute(text("INSERT INTO file_versions (path, state, phash, dhash, created_at, updated_at) "
                          "VALUES ('/old.jpg', 'committed', 'ffff0001abcd1234', '0011223344556677', '2026-01-01', '2026-01-01')"))
    eng.dispose()
    with open_catalog(url) as c:
        assert current_revision(c.engine) == head_revision() == "0008"
        with c.session() as s:
            r = s.query(FileVersion).one()
            assert (r.phash_b0, r.phash_b1, r.phash_b2, r.phash_b3) == (0xFFFF, 0x0001, 0xABCD, 0x1234)
            assert [x.path for x, _, _ in dup.near(s, "ffff0001abcd1235", "0011223344556677")] == ["/old.jpg"]
    eng = make_engine(url)
    with eng.begin() as conn:
        command.downgrade(_alembic_config(conn), "0007")
        cols = {row[1] for row in conn.execute(text("PRAGMA table_info(file_versions)"))}
    eng.dispose()
    assert "phash_b0" not in cols and "artifact_of" not in cols and "phash" in cols


def _near_finds_everything_within_the_distance(cat):
    rng = random.Random(1)
    base = [f"{rng.getrandbits(64):016x}" for _ in range(300)]
    query = base[0]
    planted = {k: _flip(query, k, rng) for k in (1, 3, 7, 11, 14, 15, 16)}
    with cat.session() as s:
        for i, h in enumerate(base + list(planted.values())):
            s.add(FileVersion(path=f"/p/{i}.jpg", state="committed", phash=h, dhash=query if h in planted.values() else h))
    with cat.session() as s:
        got = {r.phash: (dp, dd) for r, dp, dd in dup.near(s, query, query, limit=100)}
    want = {h for k, h in planted.items() if k <= likeness.PHASH_MAX} | {query}
    assert set(got) == want  # exactly: everything within 14 bits, nothing beyond
    assert all(dp == likeness.distance(query, h) for h, (dp, _) in got.items())


def test_near_finds_everything_within_the_distance_sqlite(tmp_path):
    with open_catalog(f"sqlite:///{tmp_path / 'c.sqlite'}", create=True) as cat:
        _near_finds_everything_within_the_distance(cat)
        with cat.engine.connect() as c:
            plan = " ".join(str(r[-1]) for r in c.execute(text(
                "EXPLAIN QUERY PLAN SELECT id, phash_b0, phash_b1, phash_b2, phash_b3 FROM file_versions "
                "WHERE phash_b2 IN (1, 2, 3)")))
        assert "COVERING INDEX ix_file_versions_phash_b2" in plan


def test_near_finds_everything_within_the_distance_postgres(fresh_pg_url):
    with open_catalog(fresh_pg_url, create=True) as cat:
        _near_finds_everything_within_the_distance(cat)


def test_near_groups_are_exactly_the_connected_near_pairs():
    rng = random.Random(3)
    entries = [(i, f"/p/{i}.jpg", f"{rng.getrandbits(64):016x}", f"{rng.getrandbits(64):016x}") for i in range(700)]
    for k, (dp, dd) in enumerate([(14, 13), (15, 0), (0, 14), (3, 3)]):  # two near, two just too far
        _, _, ph, dh = entries[k]
        entries.append((1000 + k, f"/q/{k}.jpg", _flip(ph, dp, rng), _flip(dh, dd, rng)))
    want = {frozenset((a[0], b[0])) for x, a in enumerate(entries) for b in entries[x + 1:]
            if likeness.near(a[2], a[3], b[2], b[3])}
    got = dup.near_groups(entries)
    assert {frozenset(m[0] for m in g) for g in got} == want == {frozenset((0, 1000)), frozenset((3, 1003))}
