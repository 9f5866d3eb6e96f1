"""Alembic environment: the models' metadata, the URL from the caller or settings, batch mode on SQLite."""

from __future__ import annotations

from logging.config import fileConfig

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from alembic import context
from shared.config import Settings
from shared.db import models  # noqa: F401  (registers every table on Base.metadata)
from shared.db.base import Base
from shared.db.session import make_engine

config = context.config

# Programmatic callers (shared.db.migrate) keep the process's own logging setup.
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().database_url


def _options(dialect_name: str) -> dict[str, object]:
    sqlite = dialect_name == "sqlite"
    # SQLite cannot ALTER most things in place: batch mode copies the table instead. Its DDL is
    # transactional once shared.db.session emits BEGIN, so a failed migration leaves nothing behind.
    return {"target_metadata": target_metadata, "compare_type": True, "render_as_batch": sqlite,
            **({"transactional_ddl": True} if sqlite else {})}


def run_migrations_offline() -> None:
    """Emit the SQL (``alembic upgrade head --sql``) without connecting."""
    url = _url()
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"},
                      **_options(sa.make_url(url).get_backend_name()))
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over a caller's connection (``config.attributes['connection']``) or a new one."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Foreign keys off on SQLite: batch mode drops and re-creates tables, which would cascade.
    engine = make_engine(_url(), sqlite_foreign_keys=False, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
