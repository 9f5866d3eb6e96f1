"""tagging_events has one writer: received -> queued -> tagged/failed -> dead letter, never backwards."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.events import (
    claim_stragglers,
    mark_enqueued,
    mark_unsendable,
    record_dead_letter,
    record_events,
    record_failure,
)
from shared.db.models import DeadLetter, TaggingEvent
from shared.db.tags import TaggingResult, apply_batch
from shared.events import ProductUploaded

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def result(event_id: str = "e1", product_id: str = "p1", **changes: Any) -> TaggingResult:
    base = TaggingResult(
        event_id=event_id, product_id=product_id, seller_id="s1", title="Nike Men Navy Blue Running Shoes",
        description=None, image_uri=None, locale=None, occurred_at=T0, content_hash="h-shoes",
        model_version="v1", tags=(("colour", "navy", 0.97, "auto"),),
    )
    return replace(base, **changes)


def upload(event_id: str, product_id: str = "p1") -> ProductUploaded:
    return ProductUploaded(event_id=event_id, product_id=product_id, seller_id="s1", title="Shoes",
                           occurred_at=T0)


def events(session: Session) -> dict[str, sa.Row[Any]]:
    return {row.event_id: row for row in session.execute(sa.select(TaggingEvent.__table__))}


def test_recorded_events_are_sent_while_received(session: Session) -> None:
    first = record_events(session, [upload("e2"), upload("e1")], T0)
    assert [p["event_id"] for p in first] == ["e1", "e2"]
    assert {e: (r.status, r.attempts, r.enqueued_at) for e, r in events(session).items()} == {
        "e1": ("received", 0, None), "e2": ("received", 0, None)}

    mark_enqueued(session, ["e2", "e1"], T0)
    assert {r.enqueued_at for r in events(session).values()} == {T0}
    record_failure(session, "e1", "p1", "model server unavailable", attempts=1)
    again = record_events(session, [upload("e1"), upload("e2"), upload("e3")], T0)
    assert sorted(p["event_id"] for p in again) == ["e2", "e3"]  # a failed event is not sent again
    assert len(events(session)) == 3


def test_stragglers_are_claimed_until_sent_or_unsendable(session: Session) -> None:
    record_events(session, [upload("e1"), upload("e2")], T0)
    mark_enqueued(session, ["e2"], T0)

    def claim(after_s: int) -> list[str]:
        return [event_id for event_id, _ in claim_stragglers(
            session, now=T0 + timedelta(seconds=after_s), older_than_s=30, lost_after_s=300, limit=10)]

    assert claim(10) == []
    assert claim(60) == ["e1"]  # never queued; e2 was queued recently
    assert claim(400) == ["e1", "e2"]  # the broker lost e2's message
    mark_unsendable(session, "e1", "title: required field is missing", T0)
    assert claim(400) == ["e2"]
    row = events(session)["e1"]
    assert (row.status, row.last_error, row.finished_at) == ("failed", "title: required field is missing", T0)


def test_record_failure_inserts_then_updates(session: Session) -> None:
    record_failure(session, "e1", "p1", "model server unavailable", attempts=1)
    record_failure(session, "e1", "p1", "model server still unavailable", attempts=2)
    rows = events(session)
    assert list(rows) == ["e1"]
    assert (rows["e1"].product_id, rows["e1"].status, rows["e1"].last_error, rows["e1"].attempts) == (
        "p1", "failed", "model server still unavailable", 2)
    assert rows["e1"].finished_at is not None

    apply_batch(session, [result("e2", "p2")])
    record_failure(session, "e2", "p2", "redelivered copy failed", attempts=2)
    assert events(session)["e2"].status == "tagged"


def test_dead_letters_once_per_event(session: Session) -> None:
    record_failure(session, "e1", "p1", "image too large", attempts=3)
    first = record_dead_letter(session, "e1", '{"event_id": "e1"}', "image too large after 3 attempts", 3)
    again = record_dead_letter(session, "e1", '{"event_id": "e1"}', "image too large after 3 attempts", 3)
    record_dead_letter(session, None, "not json", "malformed message", 1)
    record_dead_letter(session, None, "not json", "malformed message", 1)

    assert first == again
    rows = session.execute(
        sa.select(DeadLetter.event_id, DeadLetter.payload, DeadLetter.reason, DeadLetter.attempts)
        .order_by(DeadLetter.id)
    ).all()
    assert [tuple(r) for r in rows] == [
        ("e1", '{"event_id": "e1"}', "image too large after 3 attempts", 3),
        (None, "not json", "malformed message", 1),
        (None, "not json", "malformed message", 1),
    ]
    row = events(session)["e1"]
    assert (row.status, row.last_error, row.attempts) == ("dead", "image too large after 3 attempts", 3)


@pytest.mark.parametrize("set_based", [True, False])
def test_record_and_mark_many_events_at_once(session: Session, monkeypatch: pytest.MonkeyPatch,
                                             set_based: bool) -> None:
    """More events than one IN list holds (KEYS_PER_QUERY): Postgres takes them as one JSON document
    and one key array, the executemany path (SQLite, or SET_BASED off) in chunks; same rows either way."""
    from shared.db import sql

    monkeypatch.setattr(sql, "SET_BASED", set_based)
    n = sql.KEYS_PER_QUERY + 101
    batch = [upload(f"e{k:04d}", f"p{k}") for k in range(n)]
    sent = record_events(session, batch, T0)
    assert [p["event_id"] for p in sent] == sorted(e.event_id for e in batch)
    assert sent[7] == batch[7].model_dump(mode="json")
    mark_enqueued(session, [e.event_id for e in batch[:-1]], T0)
    rows = events(session)
    assert len(rows) == n and {r.status for r in rows.values()} == {"received"}
    assert rows["e0007"].payload == batch[7].model_dump(mode="json") and rows["e0007"].product_id == "p7"
    assert sum(r.enqueued_at is not None for r in rows.values()) == n - 1
    record_failure(session, "e0001", "p1", "boom", attempts=1)
    again = record_events(session, batch[:3], T0)  # known: still 'received' ones are sent again
    assert [p["event_id"] for p in again] == ["e0000", "e0002"]
