"""The one writer of ``tagging_events``: an event's life, received -> queued -> tagged/failed -> dead letter.

The API records accepted events and marks them queued, the sweeper re-sends the stragglers, and
the workers record each outcome (through ``apply_batch``), failures and dead letters. Helpers take
the session first and never commit: the request handler, the sweeper or the task commits, and only
then talks to the broker (a worker must never see an event whose row is not committed) or acks (a
redelivered batch re-applies to the same rows and changes nothing more).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import DeadLetter, TaggingEvent
from shared.db.sql import (
    chunks,
    dialect_insert,
    json_rows_document,
    json_rows_select,
    keys_as_array,
    set_based,
    unnest_select,
)
from shared.events import ProductUploaded

_events = cast(sa.Table, TaggingEvent.__table__)
_dead_letters = cast(sa.Table, DeadLetter.__table__)


# --- received and queued (the API) ----------------------------------------------------------------

def record_events(session: Session, events: Sequence[ProductUploaded], now: datetime,
                  mark: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Insert new events as 'received' (a known event_id keeps its one row); returns what to enqueue.

    To enqueue: every new event, plus known ones still 'received' (their first send may have
    failed), as the stored payload. Tagged, failed or dead events are not sent again.

    ``mark``: ids sent earlier, marked enqueued at ``now`` (:func:`mark_enqueued`) by the same
    statement on Postgres, so that on a session in autocommit (:func:`shared.db.session.autocommit_scope`)
    recording and marking are one round trip and one commit.
    """
    if not events:
        mark_enqueued(session, mark, now)
        return []
    rows = [{"event_id": e.event_id, "product_id": e.product_id, "status": "received", "attempts": 0,
             "payload": e.model_dump(mode="json"), "received_at": now}
            for e in sorted(events, key=lambda e: e.event_id)]  # key order: no deadlock between requests
    if set_based(session, rows, ["event_id"]):
        # Postgres: one INSERT ... SELECT FROM json_to_recordset(one JSON document), one statement text
        # whatever the batch size (an executemany with RETURNING is sent as one multi-VALUES statement
        # per batch size, which psycopg parses anew each time; an array per column quotes every
        # payload in Python: both measured in bench/publish.py).
        doc = json_rows_document(rows, _RECORDED)
        params = {"json_rows": doc, "now": now}
        if mark and keys_as_array(session):
            stmt, params["keys"] = _record_and_mark_statement(), sorted(mark)
        else:
            stmt = _record_statement()
            mark_enqueued(session, mark, now)
        inserted = set(session.execute(stmt, params).scalars())
    else:
        mark_enqueued(session, mark, now)
        stmt = dialect_insert(session, _events).on_conflict_do_nothing(index_elements=[_events.c.event_id])
        inserted = set(session.execute(stmt.returning(_events.c.event_id), rows).scalars())
    out = [row["payload"] for row in rows if row["event_id"] in inserted]
    known = sorted(row["event_id"] for row in rows if row["event_id"] not in inserted)
    for chunk in _key_lists(session, known):
        out.extend(session.execute(
            sa.select(_events.c.payload).where(_key_in(session, chunk), _events.c.status == "received",
                                               _events.c.payload.is_not(None))
        ).scalars())
    return out


_RECORDED = ("event_id", "product_id", "payload")


@functools.cache
def _record_statement() -> sa.Insert:
    """Postgres: INSERT ... SELECT FROM json_to_recordset(:json_rows) ... ON CONFLICT DO NOTHING
    RETURNING event_id, as 'received' at :now; built once (building costs more than running it)."""
    recorded = json_rows_select(_events, _RECORDED).subquery("r")
    select = sa.select(*recorded.c, sa.literal("received"), sa.literal(0),
                       sa.bindparam("now", type_=_events.c.received_at.type))
    return (postgresql.insert(_events).from_select([*_RECORDED, "status", "attempts", "received_at"], select)
            .on_conflict_do_nothing(index_elements=[_events.c.event_id]).returning(_events.c.event_id))


@functools.cache
def _record_and_mark_statement() -> sa.Insert:
    """:func:`_record_statement` with an UPDATE of the earlier ids (:keys) in a WITH clause: one
    statement. Postgres runs a data-modifying WITH to completion even though nothing reads it, on
    the statement's snapshot; the INSERT of a new id never touches a row the UPDATE marks."""
    return _record_statement().add_cte(_mark_statement().returning(_events.c.event_id).cte("marked"))


def _key_lists(session: Session, keys: Sequence[str]) -> Any:
    """Postgres: all keys at once (one array parameter); elsewhere IN lists of bounded size."""
    if not keys:
        return []
    return [keys] if keys_as_array(session) else chunks(keys)


def _key_in(session: Session, keys: Sequence[str]) -> sa.ColumnElement[bool]:
    """``event_id = ANY(:keys)`` on Postgres (one array parameter, one statement text for any
    count), ``event_id IN (...)`` elsewhere."""
    if keys_as_array(session):
        keys_param = sa.bindparam("keys", list(keys), type_=postgresql.ARRAY(sa.Text))
        return _events.c.event_id == sa.any_(keys_param)
    return _events.c.event_id.in_(keys)


def mark_enqueued(session: Session, event_ids: Sequence[str], now: datetime) -> None:
    """Note that these events reached the broker at ``now`` (the sweeper then leaves them alone)."""
    if not event_ids:
        return
    if keys_as_array(session):  # one statement, built once, all keys as one array
        session.execute(_mark_statement(), {"keys": sorted(event_ids), "now": now})
        return
    for chunk in chunks(sorted(event_ids)):
        session.execute(
            sa.update(_events).where(_events.c.event_id.in_(chunk), _events.c.status == "received")
            .values(enqueued_at=now)
        )


@functools.cache
def _mark_statement() -> sa.Update:
    keys = sa.bindparam("keys", type_=postgresql.ARRAY(sa.Text))
    return (sa.update(_events).where(_events.c.event_id == sa.any_(keys), _events.c.status == "received")
            .values(enqueued_at=sa.bindparam("now", type_=_events.c.enqueued_at.type)))


# --- stragglers (the sweeper) ---------------------------------------------------------------------

def claim_stragglers(
    session: Session, *, now: datetime, older_than_s: float, lost_after_s: float, limit: int
) -> list[tuple[str, dict[str, Any] | None]]:
    """Rows still 'received' that need sending: never queued for ``older_than_s``, or queued longer
    ago than ``lost_after_s`` (the broker lost the message). Locked, skipping rows another sweeper holds."""
    never_queued = sa.and_(_events.c.enqueued_at.is_(None),
                           _events.c.received_at < now - timedelta(seconds=older_than_s))
    lost = _events.c.enqueued_at < now - timedelta(seconds=lost_after_s)
    stmt = (sa.select(_events.c.event_id, _events.c.payload)
            .where(_events.c.status == "received", sa.or_(never_queued, lost))
            .order_by(_events.c.event_id).limit(limit).with_for_update(skip_locked=True))
    return [(row.event_id, row.payload) for row in session.execute(stmt)]


def mark_unsendable(session: Session, event_id: str, error: str, now: datetime) -> None:
    """A recorded event that can no longer be sent (no payload, or it fails today's schema): failed."""
    session.execute(
        sa.update(_events).where(_events.c.event_id == event_id, _events.c.status == "received")
        .values(status="failed", last_error=error, finished_at=now)
    )


# --- outcomes (the workers) -----------------------------------------------------------------------

def upsert_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or update tagging_events by event_id; a failure never demotes a tagged or dead event.
    Postgres: the rows as one array per column (one statement), like the batch's tags."""
    rows = sorted(rows, key=lambda row: row["event_id"])
    as_arrays = set_based(session, rows, ["event_id"])
    stmt = dialect_insert(session, _events)
    if as_arrays:
        columns = list(rows[0])
        stmt = postgresql.insert(_events).from_select(columns, unnest_select(_events, rows, columns))
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[_events.c.event_id],
        set_={
            "product_id": excluded.product_id,
            "status": excluded.status,
            # Attempts only grow, whatever order the deliveries are written in.
            "attempts": sa.case((excluded.attempts > _events.c.attempts, excluded.attempts),
                                else_=_events.c.attempts),
            "last_error": excluded.last_error,
            "image_error": excluded.image_error,
            "model_version": excluded.model_version,
            "finished_at": excluded.finished_at,
        },
        # Plain comparisons, not NOT IN: an expanding IN list cannot be used in an executemany.
        where=sa.or_(excluded.status != "failed",
                     sa.and_(_events.c.status != "tagged", _events.c.status != "dead")),
    )
    if as_arrays:
        session.execute(stmt)
    elif rows:
        session.execute(stmt, rows)


def record_failure(session: Session, event_id: str, product_id: str, error: str, attempts: int) -> None:
    """Mark an event failed with its error (inserting the row if missing); a tagged event stays tagged."""
    now = utcnow()
    upsert_events(session, [
        {"event_id": event_id, "product_id": product_id, "status": "failed", "attempts": attempts,
         "last_error": error, "image_error": None, "model_version": None,
         "received_at": now, "finished_at": now}
    ])


def record_dead_letter(
    session: Session, event_id: str | None, payload: str, reason: str, attempts: int
) -> int:
    """Keep a message given up on and mark its event dead; one row per event_id, so a retry adds none.

    Returns the dead letter's id. Messages without an event_id cannot be de-duplicated and each
    call adds a row.
    """
    now = utcnow()
    stmt = dialect_insert(session, _dead_letters).values(
        event_id=event_id, payload=payload, reason=reason, attempts=attempts, created_at=now
    )
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[_dead_letters.c.event_id],
        set_={"payload": excluded.payload, "reason": excluded.reason, "attempts": excluded.attempts},
    )
    dead_letter_id = session.execute(stmt.returning(_dead_letters.c.id)).scalar_one()
    if event_id is not None:
        session.execute(
            sa.update(_events).where(_events.c.event_id == event_id)
            .values(status="dead", last_error=reason, attempts=attempts, finished_at=now)
        )
    return int(dead_letter_id)
