"""A throw-away local PostgreSQL cluster on a Unix socket, for the tests and the benches that
measure the server catalog: ``start_cluster()`` -> (URL of its ``postgres`` database, stop)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from typing import Callable


class ClusterUnavailable(Exception):
    """No cluster could be started here (no server binaries, or initdb/pg_ctl failed): the
    message says why, for a test to skip with or a bench to stop with."""


def pg_binary(name: str) -> str | None:
    """On PATH, else where Debian's postgresql package keeps it (/usr/lib/postgresql/<ver>/bin)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return versions[-1] if versions else None


def as_postgres(cmd: str, cwd: str) -> subprocess.CompletedProcess:
    """``cmd`` in bash, as the 'postgres' user when run as root (PostgreSQL refuses root)."""
    if os.geteuid() == 0:
        return subprocess.run(["su", "postgres", "-s", "/bin/bash", "-c", cmd], cwd=cwd, capture_output=True,
                              text=True, timeout=120)
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=120)


def start_cluster(prefix: str = "archiver-pg-", *, fsync: bool = False, port: int | None = None) -> tuple[str, Callable[[], None]]:
    """Start a new cluster in a temporary folder (``fsync`` off unless asked: a test needs no
    durability, a bench of commit costs does) and return its URL and a ``stop()`` that removes it.
    Raises ``ClusterUnavailable``."""
    initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise ClusterUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    d = tempfile.mkdtemp(prefix=prefix)
    if os.geteuid() == 0:
        shutil.chown(d, "postgres")
    port = port or 20000 + os.getpid() % 20000
    opts = f"-k {d} -p {port} -c listen_addresses=''" + ("" if fsync else " -c fsync=off")
    r = as_postgres(f"{initdb} -D {d}/data -A trust -U postgres >/dev/null && "
                    f"{pg_ctl} -D {d}/data -o \"{opts}\" -l {d}/log -w start", d)
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        raise ClusterUnavailable(f"cannot start a PostgreSQL cluster: {r.stderr[-500:]}")

    def stop() -> None:
        as_postgres(f"{pg_ctl} -D {d}/data stop -m immediate", d)
        shutil.rmtree(d, ignore_errors=True)

    return f"postgresql+psycopg://postgres@/postgres?host={d}&port={port}", stop
