"""SQL helpers every writer shares: keyed IN (...) lists in bounded chunks, and dialect-aware upserts.

One home so the bound-parameter budget and the set of supported dialects are decided once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

KEYS_PER_QUERY = 500  # keys per IN (...) list: well under SQLite's and Postgres's bound-parameter limits

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = KEYS_PER_QUERY) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``, order kept (callers pass keys sorted)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def dialect_insert(session: Session, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ON CONFLICT on the session's dialect (Postgres or SQLite)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"upserts are written for postgresql and sqlite, not {name}")
