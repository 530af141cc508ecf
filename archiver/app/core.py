"""How a command reaches the core: ``@with_core`` hands it a ``Core`` that opens the config,
catalog, vault and codecs on first use (so a command fails in the same order it always did)."""

from __future__ import annotations

import functools
from functools import cached_property

from ..errors import NotInCatalogError


class Core:
    """What one command run works with, each opened once, when first asked for.

    ``cfg``: the command's ``--config`` file (else the search path) with ``overrides``;
    ``catalog``: the existing catalog (a missing one is ``NoCatalogError``; with ``guard``, a
    database failure is one ``CatalogError`` line); ``vault``; ``codecs``: the codec registry with
    this installation's settings. ``guard(fn)``: ``fn()`` with database failures made one line."""

    def __init__(self, config_path=None, overrides: dict | None = None, *, guard_db: bool = True):
        self.config_path = config_path
        self.overrides = overrides or {}
        self.guard_db = guard_db

    def guard(self, fn):
        if not self.guard_db:
            return fn()
        from ..catalog.db import guarded  # heavy: sqlalchemy (catalog), not loaded by archiver --help

        return guarded(fn)

    @cached_property
    def cfg(self):
        from ..config import load_config  # heavy: pydantic and yaml (config), not loaded by archiver --help

        return load_config(self.config_path, **self.overrides)

    @cached_property
    def catalog(self):
        from ..catalog.db import open_catalog  # heavy: sqlalchemy (catalog), not loaded by archiver --help

        return self.guard(lambda: open_catalog(self.cfg))

    @cached_property
    def catalog_place(self) -> str:
        """The catalog this run reads, as messages name it: its file, or its URL without password."""
        from ..catalog.db import catalog_place  # heavy: sqlalchemy (catalog), not loaded by archiver --help

        return catalog_place(self.cfg.resolved_catalog_url())

    def catalog_files(self) -> int:
        """How many files the opened catalog knows (0: nothing was archived with it)."""
        from ..catalog.queries import file_count  # heavy: sqlalchemy (catalog), not loaded by archiver --help

        with self.catalog.read_session() as s:
            return file_count(s)

    def catalog_note(self) -> str:
        """Which catalog was asked, and whether it is empty: said wherever a lookup finds nothing,
        so that a wrong ARCHIVER_HOME or --config is seen at once."""
        n = self.guard(self.catalog_files)
        if n == 0:
            return (f"catalog {self.catalog_place} is empty: nothing was archived with it; "
                    "wrong ARCHIVER_HOME or --config?")
        return f"catalog {self.catalog_place}, {n} file(s)"

    def not_in_catalog(self, target: str, suffix: str = ""):
        """The ``NotInCatalogError`` for ``target``, naming the catalog that was searched."""
        return NotInCatalogError(f"{target}: not in the catalog{suffix} ({self.catalog_note()})")

    @cached_property
    def vault(self):
        from ..storage.vault import Vault  # heavy: storage.vault (~7 ms), not loaded by archiver --help

        return Vault(self.cfg.resolved_vault_dir())

    @cached_property
    def codecs(self):
        from ..work import Codecs  # heavy: sqlalchemy (work), not loaded by archiver --help

        return Codecs.from_config(self.cfg)


def with_core(fn=None, *, overrides: tuple[str, ...] = (), guard_db: bool = True):
    """Decorate a command so that it receives ``core=Core(...)``. Its ``config_path`` option (if it
    has one) is taken for the config file; the options named in ``overrides`` are passed on
    unchanged and also given to ``load_config``."""

    def wrap(command):
        @functools.wraps(command)
        def run(*args, **kwargs):
            config_path = kwargs.pop("config_path", None)
            core = Core(config_path, {k: kwargs[k] for k in overrides}, guard_db=guard_db)
            return command(*args, core=core, **kwargs)

        return run

    return wrap(fn) if fn is not None else wrap
