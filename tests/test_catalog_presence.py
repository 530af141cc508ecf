"""``open_catalog``: a catalog must exist unless the caller creates one, and only where none ever
existed (F2); the marker beside it records that one was created. The commands themselves:
``test_catalog_presence_cli.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from archiver.catalog.db import MARKER_SUFFIX, open_catalog, read_marker
from archiver.errors import CatalogError, NoCatalogError

CATALOG = "catalog.sqlite"


def _url(home: Path) -> str:
    return f"sqlite:///{home / CATALOG}"


def _catalog_files(home: Path) -> dict[str, bytes]:
    """The catalog, its WAL files and its marker, as they are on disk."""
    names = (CATALOG, CATALOG + "-wal", CATALOG + "-shm", CATALOG + MARKER_SUFFIX)
    return {n: (home / n).read_bytes() for n in names if (home / n).exists()}


def test_open_catalog_must_exist_unless_asked_to_create(tmp_path):
    home = tmp_path / "home"
    with pytest.raises(NoCatalogError, match="no catalog at"):
        open_catalog(_url(home))
    assert not home.exists()  # not even the directory
    with open_catalog(_url(home), create=True) as c:
        assert "file_versions" in c.table_names()
    rec = read_marker(home / (CATALOG + MARKER_SUFFIX))
    assert rec["how"] == "created" and rec["catalog"] == str(home / CATALOG) and rec["at"][:4].isdigit()
    with open_catalog(_url(home)) as c:  # it exists now
        assert "file_versions" in c.table_names()


@pytest.mark.parametrize("harm", ["missing", "0-byte", "zeroed", "no schema"])
@pytest.mark.parametrize("create", [False, True])
def test_a_catalog_that_existed_is_never_replaced(tmp_path, harm, create):
    home = tmp_path / "home"
    open_catalog(_url(home), create=True).close()
    for n in (CATALOG, CATALOG + "-wal", CATALOG + "-shm"):
        (home / n).unlink(missing_ok=True)
    if harm == "0-byte":
        (home / CATALOG).write_bytes(b"")
    elif harm == "zeroed":
        (home / CATALOG).write_bytes(bytes(8192))
    elif harm == "no schema":  # an empty SQLite database where the catalog was
        import sqlite3

        sqlite3.connect(home / CATALOG).execute("PRAGMA user_version = 1").connection.close()
    before = _catalog_files(home)
    with pytest.raises(CatalogError, match="restore it from your backup") as e:
        open_catalog(_url(home), create=create)
    assert not isinstance(e.value, NoCatalogError)
    assert str(home / CATALOG) in str(e.value) and "was created on" in str(e.value)
    assert _catalog_files(home) == before


def test_an_empty_file_without_a_marker_is_not_taken_for_a_fresh_home(tmp_path):
    (tmp_path / CATALOG).write_bytes(b"")
    for create in (False, True):
        with pytest.raises(CatalogError, match="empty"):
            open_catalog(_url(tmp_path), create=create)
    assert _catalog_files(tmp_path) == {CATALOG: b""}


def test_a_catalog_from_an_older_version_gets_its_marker_on_open(tmp_path):
    """A valid catalog without a marker (made before markers existed) opens as before, and from
    then on is protected like any other."""
    open_catalog(_url(tmp_path), create=True).close()
    marker = tmp_path / (CATALOG + MARKER_SUFFIX)
    marker.unlink()
    with open_catalog(_url(tmp_path)) as c, c.session() as s:
        assert s.execute(text("SELECT count(*) FROM file_versions")).scalar() == 0
    assert read_marker(marker)["how"] == "found"
    (tmp_path / CATALOG).unlink()
    with pytest.raises(CatalogError, match="was in use on .* but is missing now"):
        open_catalog(_url(tmp_path), create=True)


def test_a_foreign_database_is_never_turned_into_a_catalog(tmp_path):
    import sqlite3

    con = sqlite3.connect(tmp_path / CATALOG)
    con.execute("CREATE TABLE photos (x)")
    con.commit()
    con.close()
    with pytest.raises(CatalogError, match="not an archiver catalog"):
        open_catalog(_url(tmp_path), create=True)
    assert not (tmp_path / (CATALOG + MARKER_SUFFIX)).exists()


def test_doctor_reports_a_lost_catalog_and_creates_nothing(tmp_path):
    from archiver.config import Config
    from archiver.app.doctor import _catalog

    home = tmp_path / "home"
    cfg = Config(catalog_url=_url(home))
    assert _catalog({"cfg": cfg}).status == "ok" and not home.exists()  # fresh: "not created yet"
    open_catalog(_url(home), create=True).close()
    (home / CATALOG).unlink()
    c = _catalog({"cfg": cfg})
    assert c.status == "fail" and "restore it from your backup" in c.detail
    assert not (home / CATALOG).exists()
