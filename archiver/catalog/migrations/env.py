"""Alembic environment: run on the connection the catalog passes in (``config.attributes``),
or on ``sqlalchemy.url`` when run from the alembic command line."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from archiver.catalog.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection):
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # pragma: no cover - command-line use
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
