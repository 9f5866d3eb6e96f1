"""Throwaway Postgres databases for the benchmarks: dropped, created and migrated the production
way (alembic). Only names containing 'bench' are ever dropped, so a wrong URL cannot cost data."""

from __future__ import annotations

import sqlalchemy as sa


def _execute_on_server(url: sa.URL, *statements: str) -> None:
    """Run statements on the server's ``postgres`` database (CREATE/DROP DATABASE need autocommit)."""
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        admin.dispose()


def _checked_name(url: sa.URL) -> str:
    name = url.database or ""
    if "bench" not in name:
        raise SystemExit(f"refusing to drop database {name!r}: its name must contain 'bench'")
    return sa.create_engine(url.set(database="postgres")).dialect.identifier_preparer.quote(name)


def recreate_database(url: str) -> str:
    """Drop (if there), create and migrate the database ``url`` names; returns the URL. A failed
    migration drops it again, so nothing half-built is left behind."""
    from shared.db.migrate import upgrade

    target = sa.make_url(url)
    quoted = _checked_name(target)
    _execute_on_server(target, f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)", f"CREATE DATABASE {quoted}")
    try:
        upgrade(url)
    except BaseException:
        drop_database(url)
        raise
    return url


def drop_database(url: str) -> None:
    target = sa.make_url(url)
    _execute_on_server(target, f"DROP DATABASE IF EXISTS {_checked_name(target)} WITH (FORCE)")
