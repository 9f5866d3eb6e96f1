"""Database fixtures: a fresh Postgres database and SQLite file per test session, migrated by Alembic."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from shared.db.migrate import upgrade
from shared.db.session import dispose_engines, get_engine

# The server the databases are created on; the CI's services script starts it on loopback.
ADMIN_URL = os.environ.get("TAGGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

DIALECTS = ("postgresql", "sqlite")


@pytest.fixture(scope="session")
def make_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """Factory: an empty, uniquely named database of a dialect; Postgres ones are dropped at the end."""
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    created: list[str] = []

    def make(dialect: str) -> str:
        if dialect == "sqlite":
            # A folder that does not exist yet: the engine must create it.
            return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'missing' / 'tagger.db'}"
        name = f"tagger_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return admin.url.set(database=name).render_as_string(hide_password=False)

    yield make
    dispose_engines()
    with admin.connect() as connection:
        for name in created:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session", params=DIALECTS)
def db_url(request: pytest.FixtureRequest, make_database: Callable[[str], str]) -> str:
    """A database of each dialect, built the way production builds it: ``alembic upgrade head``."""
    url = make_database(request.param)
    upgrade(url)
    return url


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    """A session whose commits are savepoints inside one transaction that is rolled back after the test."""
    connection = get_engine(db_url).connect()
    transaction = connection.begin()
    db = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield db
    finally:
        db.close()
        transaction.rollback()
        connection.close()
