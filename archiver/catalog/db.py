"""Opening the catalog: engine, sessions, schema migrations.

SQLite (the default) is opened in WAL mode with a busy timeout, foreign keys on, ``synchronous=FULL``
(a committed transaction survives a power cut — the catalog's commit is what allows an original to
be removed) and ``BEGIN IMMEDIATE`` transactions, so concurrent writers wait for each other instead
of failing with "database is locked" on a read->write upgrade. Any other SQLAlchemy URL
(PostgreSQL) works as is. The schema is migrated to the newest revision with alembic on open.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import CatalogError

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 30_000
#: execution option of ``Catalog.read_session`` connections
READ_ONLY = "archiver_read_only"


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


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _sqlite_pragmas(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _alembic_config(connection=None):
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision; refuse a catalog written by a newer archiver."""
    from alembic import command
    from alembic.script import ScriptDirectory

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


class Catalog:
    """An open catalog: ``with cat.session() as s:`` is one transaction (commit or roll back)."""

    def __init__(self, url: str, *, migrate_schema: bool = True, must_exist: bool = False):
        self.url = url
        if must_exist:
            _check_exists(url)
        try:
            self.engine = make_engine(url)
            if must_exist and current_revision(self.engine) is None:
                self.engine.dispose()
                raise CatalogError(f"{_shown(url)} is not an archiver catalog (no schema); wrong ARCHIVER_HOME or catalog_url?")
            if migrate_schema:
                migrate(self.engine)
        except CatalogError:
            raise
        except DatabaseError as e:  # e.g. a zeroed or foreign file: "file is not a database"
            raise CatalogError(f"cannot open catalog {_shown(url)}: {getattr(e, 'orig', e)}") from None
        except OperationalError as e:
            raise CatalogError(f"cannot open catalog {url}: {e.orig}") from None
        self._sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
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


def _shown(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _check_exists(url: str) -> None:
    """For commands that only read what was archived (verify, restore, stats): a SQLite catalog
    that is not there is an error, not a new empty catalog that reports "checked 0 of 0"."""
    if url.startswith("sqlite") and "///" in url:
        path = url.split("///", 1)[1].split("?", 1)[0]
        if path and path != ":memory:":
            p = Path(path)
            if not p.is_file():
                raise CatalogError(f"no catalog at {p} (wrong ARCHIVER_HOME or catalog_url? nothing was archived there)")
            if p.stat().st_size == 0:
                raise CatalogError(f"{p} is empty, not an archiver catalog (wrong ARCHIVER_HOME or catalog_url?)")


def open_catalog(url_or_config=None, *, must_exist: bool = False) -> Catalog:
    """Open (and migrate) the catalog named by a URL, a ``Config``, or the default config. With
    ``must_exist`` a catalog that does not exist yet (or is not one) is a ``CatalogError``."""
    if url_or_config is None:
        from ..config import load_config

        url_or_config = load_config()
    url = url_or_config if isinstance(url_or_config, str) else url_or_config.resolved_catalog_url()
    return Catalog(url, must_exist=must_exist)
