"""The API's writes to tagging_events: record accepted events, mark them queued, find stragglers.

Helpers take the session first and never commit: the request handler or the sweeper commits,
and only then talks to the broker (a worker must never see an event whose row is not committed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import TaggingEvent
from shared.db.tags import dialect_insert
from shared.events import ProductUploaded

_events = cast(sa.Table, TaggingEvent.__table__)
_CHUNK = 500  # keys per IN (...) list, well under both dialects' bound-parameter limits


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def record_events(session: Session, events: Sequence[ProductUploaded], now: datetime) -> list[dict[str, Any]]:
    """Insert new events as 'received' (a known event_id keeps its one row); returns what to enqueue.

    To enqueue: every new event, plus known ones still 'received' (their first send may have
    failed), as the stored payload. Tagged, failed or dead events are not sent again.
    """
    if not events:
        return []
    rows = [{"event_id": e.event_id, "product_id": e.product_id, "status": "received", "attempts": 0,
             "payload": e.model_dump(mode="json"), "received_at": now}
            for e in sorted(events, key=lambda e: e.event_id)]  # key order: no deadlock between requests
    stmt = dialect_insert(session, _events).on_conflict_do_nothing(index_elements=[_events.c.event_id])
    inserted = set(session.execute(stmt.returning(_events.c.event_id), rows).scalars())
    out = [row["payload"] for row in rows if row["event_id"] in inserted]
    known = sorted(row["event_id"] for row in rows if row["event_id"] not in inserted)
    for chunk in _chunks(known):
        out.extend(session.execute(
            sa.select(_events.c.payload).where(_events.c.event_id.in_(chunk), _events.c.status == "received",
                                               _events.c.payload.is_not(None))
        ).scalars())
    return out


def mark_enqueued(session: Session, event_ids: Sequence[str], now: datetime) -> None:
    """Note that these events reached the broker at ``now`` (the sweeper then leaves them alone)."""
    for chunk in _chunks(sorted(event_ids)):
        session.execute(
            sa.update(_events).where(_events.c.event_id.in_(chunk), _events.c.status == "received")
            .values(enqueued_at=now)
        )


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
