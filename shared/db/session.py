"""Engines and sessions: one engine per URL per process, built lazily; the outermost caller commits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.config import get_settings

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


def resolve_url(url: str | None = None) -> str:
    """The URL to use: the one given, else the configured ``TAGGER_DATABASE_URL``."""
    return url or get_settings().database_url


def _sqlite_file(url: sa.URL) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory or URI-style database."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return Path(database)


def _configure_sqlite(engine: Engine, *, foreign_keys: bool) -> None:
    """Foreign keys and WAL on every connection; BEGIN emitted by SQLAlchemy so SAVEPOINT works."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take it over.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # SQLite ignores foreign keys (and ON DELETE CASCADE) unless each connection asks.
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            # WAL lets readers (search, review UI) run while a worker writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")


def make_engine(url: str, *, sqlite_foreign_keys: bool = True, **kwargs: Any) -> Engine:
    """A new engine (uncached); for SQLite it creates the file's folder and sets the pragmas.

    A server database gets the process's configured pool (``TAGGER_DB_POOL_SIZE`` +
    ``TAGGER_DB_MAX_OVERFLOW``, read like the default URL) unless ``kwargs`` choose their own pool:
    SQLAlchemy's default (5 + 10) is smaller than the API's 40-thread pool, so overflow connections
    were opened and closed on every busy request.
    """
    parsed = sa.make_url(url)
    # Errors and logs never carry bound values: they are sellers' titles and URIs, and a failed
    # batch's error would quote every event of it (issue 11).
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, **kwargs)
        _configure_sqlite(engine, foreign_keys=sqlite_foreign_keys)
        return engine
    if "poolclass" not in kwargs and "pool" not in kwargs:  # NullPool (migrations) takes no sizes
        settings = get_settings()
        kwargs.setdefault("pool_size", settings.db_pool_size)
        kwargs.setdefault("max_overflow", settings.db_max_overflow)
    # Long-lived workers outlive database restarts: test a pooled connection before using it.
    kwargs.setdefault("pool_pre_ping", True)
    # An unreachable host fails in seconds, not at the kernel's TCP timeout (a worker probes it).
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 10)
    return sa.create_engine(parsed, **kwargs)


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default: settings), created on first use and then reused."""
    key = resolve_url(url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(key)
        return engine


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """The cached session factory bound to :func:`get_engine` for ``url``."""
    key = resolve_url(url)
    engine = get_engine(key)
    with _lock:
        factory = _sessionmakers.get(key)
        if factory is None:
            # Objects stay readable after the scope commits (callers log or return them).
            factory = _sessionmakers[key] = sessionmaker(bind=engine, expire_on_commit=False)
        return factory


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One transaction: commits when the block succeeds, rolls back (and re-raises) when it fails."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def autocommit_scope(url: str | None = None) -> Iterator[Session]:
    """A session whose every statement commits on its own (the connection in autocommit): one round
    trip for a write that one statement says whole, where :func:`session_scope` adds a BEGIN and a
    COMMIT. Only for callers whose statements are each a complete, consistent change."""
    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn, \
            Session(bind=conn) as session:
        yield session


def dispose_engines(*, close: bool = True) -> None:
    """Forget every cached engine; in a forked child call with ``close=False`` (parent's sockets)."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
        _sessionmakers.clear()
    for engine in engines:
        engine.dispose(close=close)
