"""Fixtures shared by the unit-of-work tests."""

import pytest

from archiver.testing.catalog import make_context


@pytest.fixture
def ctx(tmp_path):
    """A fresh archive context (catalog, vault, default policy) under the test's folder."""
    c = make_context(tmp_path / "state")
    yield c
    c.catalog.close()
