"""Whether a daemon serves the catalog, read without taking its lock (the dashboard's status)."""

from __future__ import annotations

from archiver.catalog.locks import ServerCatalogLock, server_locks_held
from archiver.service.lock import InstanceLock, lock_holder


def test_lock_holder_reads_proc_locks(tmp_path):
    import os

    p = tmp_path / "catalog.sqlite.daemon.lock"
    assert lock_holder(p) is None  # no file
    lock = InstanceLock(p).acquire()
    try:
        assert lock_holder(p) == os.getpid()
        InstanceLock(tmp_path / "other.lock").acquire().release()
    finally:
        lock.release()
    assert lock_holder(p) is None  # the file stays, the lock is gone


def test_server_locks_held_counts_daemons_on_postgresql(fresh_pg_url):
    from archiver.catalog.db import open_catalog

    cat = open_catalog(fresh_pg_url, create=True)
    try:
        assert server_locks_held(cat.engine) == 0
        a = ServerCatalogLock(cat.engine, "node-a").acquire()
        b = ServerCatalogLock(cat.engine, "node-b").acquire()
        assert server_locks_held(cat.engine) == 2
        a.release()
        b.release()
        assert server_locks_held(cat.engine) == 0
    finally:
        cat.close()


def test_server_locks_held_is_none_on_sqlite(tmp_path):
    from archiver.catalog.db import open_catalog

    cat = open_catalog(f"sqlite:///{tmp_path / 'c.sqlite'}", create=True)
    assert server_locks_held(cat.engine) is None
    cat.close()
