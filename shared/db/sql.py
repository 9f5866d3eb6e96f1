"""SQL helpers every writer shares: keyed IN (...) lists in bounded chunks, and dialect-aware upserts.

One home so the bound-parameter budget and the set of supported dialects are decided once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any, TypeVar

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


def unnest_select(table: sa.Table, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> sa.Select:
    """Postgres: ``SELECT * FROM unnest(:col1::type[], :col2::type[], ...)`` over ``rows`` — a whole batch
    as one array per column, so an INSERT ... SELECT writes it in one statement and one round trip,
    instead of an executemany that adapts and sends every row's parameters one by one."""
    arrays = []
    for name in columns:
        array_type = postgresql.ARRAY(table.c[name].type)
        values = [row.get(name) for row in rows]
        arrays.append(sa.bindparam(f"u_{name}", values, type_=array_type))  # psycopg sends it typed
    values = sa.func.unnest(*arrays).table_valued(*columns).render_derived(name="u")
    return sa.select(*(values.c[name] for name in columns))


#: Postgres batches written as one array per column (INSERT ... SELECT FROM unnest); False: an
#: executemany, one parameter set per row, as SQLite always does. A module switch so that
#: bench/writes.py can measure both in one run.
SET_BASED = True


def set_based(session: Session, rows: Sequence[dict[str, Any]], key: Sequence[str]) -> bool:
    """Whether to write ``rows`` with :func:`unnest_select`: on Postgres, when the rows are unique on
    ``key`` (ON CONFLICT DO UPDATE may touch a row once per statement)."""
    if not (SET_BASED and rows and session.get_bind().dialect.name == "postgresql"):
        return False
    return len(set(map(itemgetter(*key), rows))) == len(rows)  # the keys, read in C


_type_oids: dict[str, dict[str, int]] = {}  # table -> column -> type OID, read once per process


def copy_select(session: Session, table: sa.Table, rows: Sequence[dict[str, Any]],
                columns: Sequence[str]) -> sa.Select:
    """Postgres: COPY ``rows`` (binary) into a per-session temporary staging table shaped like ``table``
    and return a SELECT of them, for an INSERT ... SELECT ... ON CONFLICT. For the batch's many tag
    rows: psycopg's binary COPY adapts rows in C, where an array per column (:func:`unnest_select`)
    is adapted element by element in Python (measured: bench/writes.py)."""
    stage = f"stage_{table.name}"
    conn = session.connection()
    # Gone with a rollback, so IF NOT EXISTS each time; emptied first, as one transaction may stage
    # several batches (one round trip: psycopg sends parameterless statements together).
    conn.exec_driver_sql(f'CREATE TEMP TABLE IF NOT EXISTS "{stage}" (LIKE "{table.name}" '
                         f'INCLUDING DEFAULTS) ON COMMIT DELETE ROWS; TRUNCATE "{stage}"')
    oids = _type_oids.get(table.name)
    if oids is None:
        oids = _type_oids[table.name] = dict(conn.exec_driver_sql(
            "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %(t)s::regclass "
            "AND attnum > 0 AND NOT attisdropped", {"t": table.name}).tuples().all())
    names = ", ".join(f'"{name}"' for name in columns)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f'COPY "{stage}" ({names}) FROM STDIN (FORMAT BINARY)') as copy:
        copy.set_types([oids[name] for name in columns])
        for row in rows:
            copy.write_row([row.get(name) for name in columns])
    return _staged_select(stage, tuple(columns))


@functools.cache
def _staged_select(stage: str, columns: tuple[str, ...]) -> sa.Select:
    """SELECT the columns of a staging table: built once per shape (it is the same every batch)."""
    staged = sa.table(stage, *(sa.column(name) for name in columns))
    return sa.select(*(staged.c[name] for name in columns))


def json_rows_select(table: sa.Table, columns: Sequence[str], param: str = "json_rows") -> sa.Select:
    """Postgres: ``SELECT * FROM json_to_recordset(:json_rows::json) AS u(col1 type, ...)``: rows sent
    as ONE JSON document (:func:`json_rows_document`, json.dumps in C) that the server unpacks. For
    rows carrying JSON documents (an event's payload): an array per column (:func:`unnest_select`)
    would have psycopg quote every document into an array literal in Python (measured:
    bench/publish.py). The parameter is unbound, so the statement can be built once and reused
    (building it costs more than running it: ~0.6 ms)."""
    arg = sa.cast(sa.bindparam(param, type_=sa.Text), postgresql.JSON)
    values = (sa.func.json_to_recordset(arg)
              .table_valued(*(sa.column(name, table.c[name].type) for name in columns))
              .render_derived(name="u", with_types=True))
    return sa.select(*(values.c[name] for name in columns))


def json_rows_document(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """The value of :func:`json_rows_select`'s parameter. Values must be JSON-ready (str, numbers,
    dicts, lists, None); anything else goes as its ``str()`` and is cast by the server."""
    import json

    return json.dumps([{name: row.get(name) for name in columns} for row in rows], default=str)


def keys_as_array(session: Session) -> bool:
    """Whether keyed statements may take all their keys as one array parameter (``= ANY(:keys)``):
    on Postgres while :data:`SET_BASED` is on; else IN lists of :data:`KEYS_PER_QUERY`."""
    return SET_BASED and session.get_bind().dialect.name == "postgresql"
