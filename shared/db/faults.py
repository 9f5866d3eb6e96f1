"""Whose fault a failed database write is, and how to say so without leaking what was written.

A worker must tell an outage (the database, not the event: wait and retry, never count an attempt)
from an event the database refuses (its value is out of range: that event alone is dead-lettered)
and from a conflict that a retry resolves (deadlock, serialization). PostgreSQL says which in the
SQLSTATE class of the error (https://www.postgresql.org/docs/current/errcodes-appendix.html).
Descriptions name the error's kind, SQLSTATE and column, never its message: a message may quote
the value (another seller's title), and a dead-letter reason or a log line must not.
"""

from __future__ import annotations

import re
from enum import StrEnum

import sqlalchemy.exc as sa_exc


class Fault(StrEnum):
    INFRA = "infra"  # the database is unreachable, shutting down or out of resources
    RETRY = "retry"  # a transaction conflict: the same write succeeds when tried again
    EVENT = "event"  # the data of some event in the write is refused
    UNKNOWN = "unknown"  # anything else (a bug): counts as an attempt

#: SQLSTATE classes. 08 connection, 53 insufficient resources, 57 operator intervention (shutdown),
#: 58 system error; 40 transaction rollback; 22 data exception, 23 integrity constraint violation.
_INFRA_CLASSES = frozenset({"08", "53", "57", "58"})
_RETRY_CLASSES = frozenset({"40"})
_EVENT_CLASSES = frozenset({"22", "23"})
_TARGET = re.compile(r"\s*(?:INSERT INTO|UPDATE|DELETE FROM)\s+\"?(\w+)", re.IGNORECASE)


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state if isinstance(state, str) and len(state) == 5 else None


def classify(exc: BaseException) -> Fault:
    """Whose fault ``exc`` is (a write's exception, raised through SQLAlchemy or the driver)."""
    state = _sqlstate(exc)
    if state is not None:
        cls = state[:2]
        if cls in _INFRA_CLASSES:
            return Fault.INFRA
        if cls in _RETRY_CLASSES:
            return Fault.RETRY
        if cls in _EVENT_CLASSES:
            return Fault.EVENT
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return Fault.INFRA
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                        sa_exc.TimeoutError, ConnectionError, TimeoutError)):
        return Fault.INFRA  # no SQLSTATE: the connection itself failed (refused, reset, pool timeout)
    orig = getattr(exc, "orig", None) or exc
    if isinstance(exc, (sa_exc.DataError, sa_exc.IntegrityError)) or isinstance(
            orig, (ValueError, OverflowError)):
        return Fault.EVENT  # e.g. a value the driver cannot adapt, before the server sees it
    return Fault.UNKNOWN


def describe(exc: BaseException, prefix: str = "write") -> str:
    """``write: DatetimeFieldOverflow (SQLSTATE 22008, column occurred_at)`` — the error's kind and
    where, never its message or parameters."""
    orig = getattr(exc, "orig", None) or exc
    where = []
    state = _sqlstate(exc)
    if state:
        where.append(f"SQLSTATE {state}")
    statement = getattr(exc, "statement", None)
    target = _TARGET.match(statement) if isinstance(statement, str) else None
    if target and not state:  # refused before the server saw it: say which table it was going to
        where.append(f"table {target.group(1)}")
    diag = getattr(orig, "diag", None)
    for name in ("table_name", "column_name", "constraint_name"):
        value = getattr(diag, name, None) if diag is not None else None
        if value:
            where.append(f"{name.removesuffix('_name')} {value}")
    return f"{prefix}: {type(orig).__name__}" + (f" ({', '.join(where)})" if where else "")
