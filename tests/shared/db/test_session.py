"""Engines are cached per URL; SQLite gets its folder, foreign keys and WAL; session_scope commits once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.config import get_settings
from shared.db.migrate import upgrade
from shared.db.models import ModelVersion
from shared.db.session import get_engine, make_engine, session_scope


@pytest.fixture
def settings_url(monkeypatch: pytest.MonkeyPatch, make_database: Callable[[str], str]) -> Iterator[str]:
    """TAGGER_DATABASE_URL pointed at a fresh SQLite file, for code that reads the settings."""
    url = make_database("sqlite")
    monkeypatch.setenv("TAGGER_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_engine_is_created_once_per_url(make_database: Callable[[str], str]) -> None:
    url = make_database("sqlite")
    assert get_engine(url) is get_engine(url)
    assert get_engine(url) is not get_engine(make_database("sqlite"))


def test_sqlite_folder_foreign_keys_and_wal(make_database: Callable[[str], str]) -> None:
    url = make_database("sqlite")
    path = Path(sa.make_url(url).database or "")
    assert not path.parent.exists()
    with get_engine(url).connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert path.is_file()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_session_scope_commits_or_rolls_back(dialect: str, make_database: Callable[[str], str]) -> None:
    url = make_database(dialect)
    upgrade(url)
    with session_scope(url) as session:
        session.add(ModelVersion(version="v1", uri="s3://models/v1", status="live", metrics={"f1": 0.9}))

    with pytest.raises(RuntimeError, match="boom"), session_scope(url) as session:
        session.add(ModelVersion(version="v2", uri="s3://models/v2", status="candidate"))
        session.flush()  # the row reached the database, inside the transaction that is rolled back
        raise RuntimeError("boom")

    with session_scope(url) as session:
        rows = session.execute(sa.select(ModelVersion.version, ModelVersion.metrics)).all()
    assert [tuple(row) for row in rows] == [("v1", {"f1": 0.9})]


def test_session_scope_defaults_to_settings(settings_url: str) -> None:
    upgrade()
    with session_scope() as session:
        session.add(ModelVersion(version="v1", uri="file:///models/v1", status="candidate"))
    with session_scope(settings_url) as session:
        assert session.scalars(sa.select(ModelVersion.version)).all() == ["v1"]


@pytest.fixture
def pool_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """TAGGER_DB_POOL_SIZE=3 and TAGGER_DB_MAX_OVERFLOW=1 for engines built during the test."""
    monkeypatch.setenv("TAGGER_DB_POOL_SIZE", "3")
    monkeypatch.setenv("TAGGER_DB_MAX_OVERFLOW", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_pool_settings_reach_a_postgres_engine(pool_env: None, make_database: Callable[[str], str]) -> None:
    url = make_database("postgresql")
    assert get_engine(url).pool.size() == 3  # the cached engine every session_scope uses
    engine = make_engine(url, pool_timeout=0.2)  # what get_engine builds, with a short wait for a slot
    connections = [engine.connect() for _ in range(4)]  # the pool, then the one overflow connection
    try:
        assert engine.pool.overflow() == 1
        with pytest.raises(sa.exc.TimeoutError):  # no fifth: the limit is pool + overflow
            engine.connect()
    finally:
        for connection in connections:
            connection.close()
    assert engine.pool.checkedin() == 3  # kept for the next request; the overflow one was closed
    engine.dispose()


def test_default_pool_is_twenty_plus_ten(monkeypatch: pytest.MonkeyPatch,
                                         make_database: Callable[[str], str]) -> None:
    monkeypatch.delenv("TAGGER_DB_POOL_SIZE", raising=False)
    monkeypatch.delenv("TAGGER_DB_MAX_OVERFLOW", raising=False)
    get_settings.cache_clear()
    try:
        engine = get_engine(make_database("postgresql"))
    finally:
        get_settings.cache_clear()
    assert (engine.pool.size(), engine.pool._max_overflow) == (20, 10)  # type: ignore[attr-defined]


def test_sqlite_and_explicit_pools_keep_their_own(pool_env: None,
                                                  make_database: Callable[[str], str]) -> None:
    assert get_engine(make_database("sqlite")).pool.size() == sa.pool.QueuePool(lambda: None).size()
    # Migrations build a NullPool engine: it takes no sizes, and must not be handed any.
    engine = make_engine(make_database("postgresql"), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()
