"""Opening the catalog: engine, sessions, schema migrations, and the record that one exists.

SQLite (the default) is opened in WAL mode with a busy timeout, foreign keys on, ``synchronous=FULL``
(a committed transaction survives a power cut — the catalog's commit is what allows an original to
be removed) and ``BEGIN IMMEDIATE`` transactions, so concurrent writers wait for each other instead
of failing with "database is locked" on a read->write upgrade. Any other SQLAlchemy URL
(PostgreSQL) works as is. The schema is migrated to the newest revision with alembic on open.

A catalog is only ever created by a caller that asks for it (``create=True``: ``archive``,
``migrate`` and the daemon), and only where none existed: when one is created (or first opened by
this version) a marker records it (``catalog.sqlite.created`` beside a SQLite file; for a server
URL ``<state>/catalogs/<sha256 of the URL without its password>.created``). A catalog the marker
says existed but that is missing, empty or not a catalog any more is a ``CatalogError`` for every
caller, never a fresh empty catalog that would report "0 checked" while the archive is lost.

A statement or commit that fails because the catalog's disk (or server) is full raises a
``CatalogFullError`` (a ``NoSpaceError``, exit 13) naming the catalog, wherever it happens: one
engine hook (``_map_disk_full``) covers the unit of work, the queue, restore's record, tag and
forget alike.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .. import __version__
from ..errors import CatalogError, CatalogFullError, NoCatalogError
from ..storage import atomic
from .urls import sqlite_path  # noqa: F401 (part of this module's interface)

#: the base of every error the database layer raises (a read-only or unreachable catalog)
DBError = SQLAlchemyError

log = logging.getLogger("archiver.catalog")

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 30_000
#: execution option of ``Catalog.read_session`` connections
READ_ONLY = "archiver_read_only"
#: the marker that a catalog was created (or found) at a place: ``<catalog file><MARKER_SUFFIX>``
MARKER_SUFFIX = ".created"
#: SQLITE_FULL, and PostgreSQL's disk_full SQLSTATE
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" hook issue BEGIN itself
        # a row another tool wrote with bytes that are not UTF-8 must not make every query fail:
        # it is read with the bad bytes escaped (surrogates) and reported as such
        dbapi_conn.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # readers (the dashboard) take a plain snapshot and never hold up the writers
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def is_disk_full(exc: BaseException) -> bool:
    """Whether a database error (SQLAlchemy's or the driver's own) says the disk is full:
    SQLITE_FULL ("database or disk is full") or PostgreSQL's disk_full (53100)."""
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlite_errorcode", None) == _SQLITE_FULL or getattr(orig, "sqlstate", None) == _PG_DISK_FULL:
        return True
    return isinstance(orig, sqlite3.Error) and "database or disk is full" in str(orig)


def _map_disk_full(engine: Engine, url: str) -> None:
    """Every statement, commit and connect on ``engine`` that fails for lack of space raises a
    ``CatalogFullError`` naming the catalog (after SQLAlchemy's own clean-up), so that each
    command stops with exit 13 instead of a traceback or a failure per file. The connection is
    discarded (not the pool): a COMMIT that failed with SQLITE_FULL may leave SQLite's
    transaction open, and the pool, which takes that transaction for ended, would hand it out
    again ("cannot start a transaction within a transaction"); closing it rolls it back."""

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx):
        if is_disk_full(ctx.original_exception):
            ctx.is_disconnect, ctx.invalidate_pool_on_disconnect = True, False
            raise CatalogFullError(
                f"not enough free disk space for the catalog at {catalog_place(url)} ({ctx.original_exception}); "
                "nothing was lost: free some space there and run the command again") from None


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        if path is None:  # in memory: one database every thread sees (the default pool gives each its own, empty)
            engine = create_engine(url, poolclass=StaticPool,
                                   connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
        else:
            engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _sqlite_pragmas(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    _map_disk_full(engine, url)
    return engine


def _alembic_config(connection=None):
    from alembic.config import Config as AlembicConfig  # heavy: alembic, slow to import, only to migrate the catalog schema

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory  # heavy: alembic, slow to import, only to migrate the catalog schema

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


#: alembic's version table (``alembic.runtime.migration``'s default): one row, the revision
VERSION_TABLE = "alembic_version"


def current_revision(engine: Engine) -> str | None:
    """The catalog's schema revision as alembic records it (None: no version table, or empty),
    read with a plain query: every catalog command asks, and importing alembic costs ~0.2 s."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        revs = [r[0] for r in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))]
    if len(revs) > 1:
        raise CatalogError(f"the catalog records {len(revs)} schema revisions ({', '.join(revs)}); expected one")
    return revs[0] if revs else None


_REVISION = re.compile(r"""^revision\s*=\s*['"](\w+)['"]\s*$""", re.M)
_DOWN = re.compile(r"""^down_revision\s*=\s*(?:None|['"](\w+)['"])\s*$""", re.M)


def script_head() -> str | None:
    """The newest revision among the migration scripts, read from their ``revision`` and
    ``down_revision`` lines without importing alembic; None when they do not form one plain chain
    (then ask alembic: ``head_revision``)."""
    revs, downs = set(), set()
    for f in sorted((MIGRATIONS / "versions").glob("*.py")):
        src = f.read_text()
        rev, down = _REVISION.findall(src), _DOWN.findall(src)
        if len(rev) != 1 or len(down) != 1:
            return None
        revs.add(rev[0])
        if down[0]:
            downs.add(down[0])
    heads = revs - downs
    return heads.pop() if len(heads) == 1 and downs <= revs else None


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision; refuse a catalog written by a newer archiver.
    A catalog already at the newest revision is answered without importing alembic."""
    cur = current_revision(engine)
    if cur is not None and cur == script_head():
        return cur
    from alembic import command  # heavy: alembic, slow to import, only to migrate the catalog schema
    from alembic.script import ScriptDirectory  # heavy: alembic, slow to import, only to migrate the catalog schema

    script = ScriptDirectory.from_config(_alembic_config())
    head = script.get_current_head()
    for attempt in range(5):
        cur = current_revision(engine)
        if cur == head:
            return head
        if cur is not None:
            try:
                script.get_revision(cur)
            except Exception:
                raise CatalogError(
                    f"the catalog's schema ({cur}) is newer than this archiver knows (head {head}); upgrade archiver"
                ) from None
        try:
            with engine.begin() as conn:
                command.upgrade(_alembic_config(conn), "head")
            return head
        except OperationalError:
            # another process is creating/migrating the same catalog: wait and look again
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    return head


# -- where a catalog is, and the record that it exists ----------------------------------------
def _is_memory(url: str) -> bool:
    return url.startswith("sqlite") and sqlite_path(url) is None


def catalog_place(url: str) -> str:
    """How messages name the catalog: its file, or its URL without the password."""
    p = sqlite_path(url)
    return str(p) if p is not None else shown_url(url)


def marker_path(url: str, state_dir: Path | None = None) -> Path | None:
    """Where the record that a catalog exists at ``url`` lives: beside a SQLite file
    (``catalog.sqlite.created``); for a server URL, in the state directory under a name made
    from the URL without its password; None for an in-memory catalog (nothing to lose)."""
    p = sqlite_path(url)
    if p is not None:
        return p.with_name(p.name + MARKER_SUFFIX)
    if _is_memory(url):
        return None
    if state_dir is None:
        from ..config import default_state_dir  # heavy: yaml (via config), which catalog.db does not load at import

        state_dir = default_state_dir()
    key = hashlib.sha256(shown_url(url).encode()).hexdigest()[:32]
    return Path(state_dir) / "catalogs" / f"{key}{MARKER_SUFFIX}"


def read_marker(marker: Path | None) -> dict | None:
    """The marker's record (``at``, ``how``: created | found, ``catalog``), or None when there is
    none. A marker that cannot be parsed still says that a catalog existed."""
    if marker is None or not (marker.exists() or marker.is_symlink()):
        return None
    try:
        d = json.loads(marker.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_marker(marker: Path, url: str, how: str) -> None:
    """Record durably (temp file, fsync, rename, fsync of the directory, which is also the SQLite
    catalog's) that a catalog exists at ``url``. A marker that cannot be written is logged: the
    catalog still works, and the next open tries again."""
    rec = {"catalog": catalog_place(url), "how": how, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "by": f"archiver {__version__}"}
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(marker, (json.dumps(rec) + "\n").encode(), mode=0o644)
    except OSError as e:
        log.warning("could not record that the catalog exists", extra={"marker": str(marker), "error": str(e)})


def _gone(url: str, rec: dict, what: str) -> CatalogError:
    when = str(rec.get("at") or "")[:10] or "an earlier date"
    verb = "was created on" if rec.get("how", "created") == "created" else "was in use on"
    return CatalogError(f"the catalog at {catalog_place(url)} {verb} {when} but is {what} now: restore it from your "
                        "backup (docs/operations.md, Backups); archiver will not start a new one over it")


@contextmanager
def _creation_lock(directory: Path) -> Iterator[None]:
    """Creators on this host take turns (an flock on the directory that holds the catalog or its
    marker), so one never sees another's half-created file as an empty catalog."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Catalog:
    """An open catalog: ``with cat.session() as s:`` is one transaction (commit or roll back).

    It must exist already unless ``create`` (only the commands that archive ask for that): a
    catalog that is not there is a ``NoCatalogError`` where none was ever recorded, and a
    ``CatalogError`` ("restore it from your backup") where its marker says it existed; an empty,
    zeroed or foreign file is a ``CatalogError`` either way. Nothing is created or changed before
    these checks. A valid catalog without a marker (made by an older archiver) gets one."""

    def __init__(self, url: str, *, migrate_schema: bool = True, create: bool = False):
        self.url = url
        self.marker = marker_path(url)
        if create and self.marker is not None:
            with _creation_lock(self.marker.parent):
                self._open(migrate_schema, create)
        else:
            self._open(migrate_schema, create)
        self._sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
        # an in-memory catalog is one connection that every thread shares: one transaction at a time
        self._turn = threading.RLock() if _is_memory(url) else nullcontext()

    def _open(self, migrate_schema: bool, create: bool) -> None:
        url, rec = self.url, read_marker(self.marker)
        if _is_memory(url) and not create:
            raise NoCatalogError(f"{url}: an in-memory catalog is always new; only a creating caller opens one")
        _check_file(url, rec, create)
        try:
            self.engine = make_engine(url)
            try:
                rev = current_revision(self.engine)
                if rev is None:
                    _check_schema_less(url, rec, create, inspect(self.engine).get_table_names())
                if migrate_schema:
                    migrate(self.engine)
            except BaseException:
                self.engine.dispose()
                raise
        except CatalogError:
            raise
        except DatabaseError as e:  # e.g. a zeroed or foreign file: "file is not a database"
            if rec is not None and "file is not a database" in str(getattr(e, "orig", e)):
                raise _gone(url, rec, f"not a catalog any more ({getattr(e, 'orig', e)})") from None
            raise CatalogError(f"cannot open catalog {shown_url(url)}: {getattr(e, 'orig', e)}") from None
        if self.marker is not None and rec is None and (rev is not None or migrate_schema):
            _write_marker(self.marker, url, "found" if rev is not None else "created")

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._turn:
            s = self._sessionmaker()
            try:
                with s.begin():
                    yield s
            finally:
                s.close()

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A transaction for reading only: on SQLite a deferred BEGIN (a WAL snapshot) instead
        of ``BEGIN IMMEDIATE``, so a long dashboard query never makes a writer wait. Rolled back
        at the end: nothing done in it is kept."""
        with self._turn:
            s = self._reader()
            try:
                yield s
            finally:
                s.rollback()
                s.close()

    def table_names(self) -> list[str]:
        return inspect(self.engine).get_table_names()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def shown_url(url: str) -> str:
    """``url`` with its password hidden, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _check_file(url: str, rec: dict | None, create: bool) -> None:
    """Before the engine opens it (that switches a SQLite file to WAL, i.e. writes to it): a
    SQLite catalog file that is not there, is empty, is not a SQLite database, or is a database
    without archiver's schema, is an error (``rec``: the marker's record, None when no catalog
    was ever recorded there), unless none ever was and the caller creates one."""
    p = sqlite_path(url)
    if p is None:
        return
    if not (p.exists() or p.is_symlink()):
        if rec is not None:
            raise _gone(url, rec, "missing")
        if not create:
            raise NoCatalogError(f"no catalog at {p} (set ARCHIVER_HOME or --config to the one you archived with; "
                                 "nothing was archived here: `archiver archive`, `migrate` and `daemon` create one)")
        return
    if not p.is_file():
        raise CatalogError(f"{p} is not a file, not an archiver catalog (wrong ARCHIVER_HOME or catalog_url?)")
    if p.stat().st_size == 0:
        if rec is not None:
            raise _gone(url, rec, "empty (0 bytes)")
        raise CatalogError(f"{p} is empty (0 bytes), not an archiver catalog: restore it from your backup, or delete it "
                           "if nothing was ever archived there (wrong ARCHIVER_HOME or catalog_url?)")
    tables = _tables_read_only(p)  # never through a file descriptor of our own: see there
    if tables is _NOT_A_DATABASE:
        if rec is not None:
            raise _gone(url, rec, "not a catalog any more (not a SQLite database: zeroed or overwritten)")
        raise CatalogError(f"{p} is not a SQLite database, not an archiver catalog (wrong ARCHIVER_HOME or catalog_url?)")
    if tables is not None and "alembic_version" not in tables:
        _check_schema_less(url, rec, create, tables)


_NOT_A_DATABASE = object()


def _tables_read_only(p: Path):
    """The tables of the SQLite file ``p``, read through a read-only SQLite connection, which
    writes nothing to it (``_NOT_A_DATABASE`` for a file that is not one, None when it cannot be
    read so: the engine will say why). Never open a catalog file with ``open()``: closing that
    descriptor would drop the POSIX locks this process's SQLite connections hold on the file,
    and a concurrent writer could then corrupt it."""
    try:
        con = sqlite3.connect(f"file:{quote(str(p.resolve()))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            return [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        if getattr(e, "sqlite_errorcode", None) == 26 or "file is not a database" in str(e):  # SQLITE_NOTADB
            return _NOT_A_DATABASE
        return None
    except sqlite3.Error:
        return None


def _check_schema_less(url: str, rec: dict | None, create: bool, tables: list[str]) -> None:
    """A database without archiver's schema: a catalog that is gone (its marker says it existed),
    a foreign database, or (only for a creating caller) an empty database to create one in."""
    if rec is not None:
        raise _gone(url, rec, "empty (no archiver schema)")
    if create and not tables:
        return
    if not create and not tables and sqlite_path(url) is None:
        raise NoCatalogError(f"no catalog in {shown_url(url)} (an empty database; wrong catalog_url? "
                             "`archiver archive`, `migrate` and `daemon` create one)")
    raise CatalogError(f"{catalog_place(url)} is not an archiver catalog (no schema); wrong ARCHIVER_HOME or catalog_url?")


def open_catalog(url_or_config=None, *, create: bool = False) -> Catalog:
    """Open (and migrate) the catalog named by a URL, a ``Config``, or the default config. It must
    exist (see ``Catalog``); only the commands that archive (``archive``, ``migrate``, the daemon)
    pass ``create=True``, which creates one where none ever existed."""
    if url_or_config is None:
        from ..config import load_config  # heavy: yaml (via config), which catalog.db does not load at import

        url_or_config = load_config()
    url = url_or_config if isinstance(url_or_config, str) else url_or_config.resolved_catalog_url()
    return Catalog(url, create=create)


def open_existing(url: str) -> Catalog | None:
    """The catalog at ``url`` if one exists, for lookups only (nothing created or migrated);
    None where none was ever made. One that existed and is gone, empty or not a catalog is a
    ``CatalogError``: a plan against nothing would propose archiving the outputs again."""
    try:
        return Catalog(url, migrate_schema=False)
    except NoCatalogError:
        return None


def guarded(fn):
    """``fn()``, with a database failure turned into one CatalogError line (not a traceback)."""
    try:
        return fn()
    except SQLAlchemyError as e:
        raise CatalogError(f"catalog failure: {getattr(e, 'orig', e)}") from None
