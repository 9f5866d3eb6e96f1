"""Dead letters, operable: listed by filter without payloads, shown with them, replayed through the normal
path (row 'received', published, marked enqueued) once, never for an event already tagged."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db import migrate
from shared.db.dead_letters import (
    Filters,
    NotReplayable,
    get_dead_letter,
    list_dead_letters,
    matching_ids,
    parse_payload,
    prepare_replay,
    replay,
)
from shared.db.events import record_dead_letter, record_failure
from shared.db.models import DeadLetter, TaggingEvent
from shared.db.session import get_engine, session_scope
from shared.db.tags import TaggingResult, apply_batch
from shared.publish import Publisher
from tests.api.conftest import queued_event_ids
from tests.private_redis import flushed, private_redis_url
from tests.shared.db.dead_letter_data import add_dead_letter, dead_event, message

DEAD_BROKER = "redis://127.0.0.1:1/0"


def tag(session: Session, event_id: str, product_id: str) -> None:
    """A copy of the event that succeeded: the row is 'tagged'."""
    apply_batch(session, [TaggingResult(
        event_id=event_id, product_id=product_id, seller_id="s1", title="t", description=None,
        image_uri=None, locale=None, occurred_at=datetime(2025, 6, 1, tzinfo=UTC), content_hash="h",
        model_version="v1", tags=[])])


def event_row(session: Session, event_id: str) -> TaggingEvent:
    row = session.get(TaggingEvent, event_id)
    assert row is not None
    session.refresh(row)
    return row


# --- payloads ---------------------------------------------------------------------------------------

def test_payload_parses_back_into_the_event() -> None:
    event = parse_payload(message(dead_event(1)))
    assert (event.event_id, event.product_id, event.title) == ("evt-1", "sku-1", "Secret seller title 1")


@pytest.mark.parametrize(("payload", "error"), [
    ("{not json", "payload: not valid JSON"),
    (json.dumps({"repr": "{'event': ...}"}), "payload: not a tagging message"),
    (message(dead_event(1, product_id="a/b")), "product_id: must not contain '/'"),
    (message(dead_event(1, occurred_at="9999-12-31T23:59:59-14:00")), "occurred_at: "),
    (message(dead_event(1, title="A\u0000shirt")), "title: contains a NUL character"),
])
def test_a_payload_that_does_not_validate_is_not_replayable_naming_a_field(payload: str, error: str) -> None:
    with pytest.raises(NotReplayable) as caught:
        parse_payload(payload)
    assert caught.value.errors[0].startswith(error), caught.value.errors


# --- list and show (both dialects, rolled back) ------------------------------------------------------

def test_list_filters_newest_first_without_payloads(session: Session) -> None:
    a = add_dead_letter(session, dead_event(1), reason="OperationalError: database unavailable")
    b = add_dead_letter(session, dead_event(2), reason="occurred_at: out of range once converted to UTC")
    c = add_dead_letter(session, None, payload=json.dumps({"repr": "x"}), reason="message: keyword arguments "
                        "must be an object")
    old = session.get(DeadLetter, a)
    assert old is not None
    old.created_at = datetime(2025, 1, 1, tzinfo=UTC)
    session.flush()

    def ids(**filters: object) -> list[int]:
        return [s.id for s in list_dead_letters(session, Filters(**filters))]  # type: ignore[arg-type]

    assert ids() == [c, b, a]
    assert ids(reason="operationalerror") == [a]
    assert ids(reason="OCCURRED_AT") == [b]
    assert ids(reason="100%") == []  # LIKE wildcards are plain text
    assert ids(since=datetime(2025, 6, 1, tzinfo=UTC)) == [c, b]
    assert ids(until=datetime(2025, 6, 1, tzinfo=UTC)) == [a]
    assert ids(product_id="sku-2") == [b]
    assert ids(event_id="evt-1") == [a]
    assert ids(replayed=True) == [] and ids(replayed=False) == [c, b, a]
    page = list_dead_letters(session, limit=2)
    assert [s.id for s in page] == [c, b]
    assert [s.id for s in list_dead_letters(session, before=page[-1].id, limit=2)] == [a]
    first = list_dead_letters(session, Filters(event_id="evt-2"))[0]
    assert (first.product_id, first.event_status, first.attempts, first.replays) == ("sku-2", "dead", 3, 0)
    assert "Secret" not in repr(first)  # the summary has no payload field at all
    assert matching_ids(session, Filters()) == [a, b, c]
    assert matching_ids(session, Filters(), after=a, limit=1) == [b]


def test_show_has_the_payload_and_says_whether_it_is_replayable(session: Session) -> None:
    good = add_dead_letter(session, dead_event(1))
    bad = add_dead_letter(session, dead_event(2, product_id="a/b"))
    shown = get_dead_letter(session, good)
    assert shown is not None and shown.problems == () and "Secret seller title 1" in shown.payload
    refused = get_dead_letter(session, bad)
    assert refused is not None and refused.problems[0].startswith("product_id: must not contain '/'")
    assert get_dead_letter(session, 10**6) is None


# --- replay decisions (both dialects, rolled back) -----------------------------------------------------

def test_replay_resets_the_event_once_and_never_a_tagged_one(session: Session) -> None:
    fresh = add_dead_letter(session, dead_event(1))
    tagged = add_dead_letter(session, dead_event(2))
    tag(session, "evt-2", "sku-2")
    broken = add_dead_letter(session, dead_event(3, product_id="a/b"))
    malformed_copy = add_dead_letter(session, None, payload=message(dead_event(1), attempt=0),
                                     reason="attempt: must be a positive integer")

    outcomes = [o for o, _ in prepare_replay(session, [malformed_copy, broken, tagged, fresh, 999_999])]
    assert [(o.id, o.replayed, o.skipped) for o in outcomes] == [
        (fresh, True, None), (tagged, False, "already_tagged"), (broken, False, "not_replayable"),
        (malformed_copy, False, "duplicate"), (999_999, False, "not_found")]
    assert outcomes[2].errors[0].startswith("product_id: ")
    row = event_row(session, "evt-1")
    assert (row.status, row.attempts, row.last_error, row.enqueued_at, row.finished_at) == (
        "received", 0, None, None, None)
    assert row.payload is not None and row.payload["title"] == "Secret seller title 1"
    dl = session.get(DeadLetter, fresh)
    assert dl is not None and dl.replayed_at is not None and dl.replays == 1
    assert event_row(session, "evt-2").status == "tagged"

    again = [o for o, _ in prepare_replay(session, [fresh])]
    assert [(o.replayed, o.skipped) for o in again] == [(False, "already_replayed")]
    forced = [o for o, _ in prepare_replay(session, [fresh], force=True)]
    assert forced[0].replayed and dl.replays == 2


def test_dry_run_writes_nothing(session: Session) -> None:
    dl_id = add_dead_letter(session, dead_event(1))
    outcomes = [o for o, _ in prepare_replay(session, [dl_id], dry_run=True)]
    assert outcomes[0].replayed
    assert event_row(session, "evt-1").status == "dead"
    dl = session.get(DeadLetter, dl_id)
    assert dl is not None and dl.replayed_at is None and dl.replays == 0


def test_dying_again_after_a_replay_keeps_the_history_and_needs_force(session: Session) -> None:
    dl_id = add_dead_letter(session, dead_event(1))
    prepare_replay(session, [dl_id])
    dl = session.get(DeadLetter, dl_id)
    assert dl is not None
    replayed_at = dl.replayed_at
    # The worker gives up on the replayed event again: same row (upsert by event_id), new reason.
    record_failure(session, "evt-1", "sku-1", "ImageError: unreadable", 3)
    assert record_dead_letter(session, "evt-1", message(dead_event(1)), "ImageError: unreadable", 3) == dl_id
    session.refresh(dl)
    assert (dl.reason, dl.replayed_at, dl.replays) == ("ImageError: unreadable", replayed_at, 1)
    assert event_row(session, "evt-1").status == "dead"
    assert [o.skipped for o, _ in prepare_replay(session, [dl_id])] == ["already_replayed"]
    assert [o.replayed for o, _ in prepare_replay(session, [dl_id], force=True)] == [True]


# --- replay through a real broker (Postgres, committed) -----------------------------------------------

@pytest.fixture(scope="module")
def pg_url(make_database: Callable[[str], str]) -> str:
    url = make_database("postgresql")
    migrate.upgrade(url)
    return url


@pytest.fixture
def pg(pg_url: str) -> Iterator[str]:
    yield pg_url
    with get_engine(pg_url).begin() as connection:
        connection.exec_driver_sql("TRUNCATE dead_letters, tagging_events, products, product_tags")


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    with flushed(private_redis_url()) as client:
        yield client


def test_replay_publishes_once_and_marks_the_event_enqueued(pg: str, broker: redis.Redis) -> None:
    with session_scope(pg) as session:
        ids = [add_dead_letter(session, dead_event(n)) for n in (1, 2)]
    with Publisher(private_redis_url()) as publisher:
        report = replay(pg, publisher, ids)
        assert report.queued and [o.event_id for o in report.replayed] == ["evt-1", "evt-2"]
        assert sorted(queued_event_ids(broker)) == ["evt-1", "evt-2"]
        again = replay(pg, publisher, ids)
    assert [o.skipped for o in again.outcomes] == ["already_replayed"] * 2
    assert sorted(queued_event_ids(broker)) == ["evt-1", "evt-2"]  # sent once
    with session_scope(pg) as session:
        rows = session.scalars(sa.select(TaggingEvent).order_by(TaggingEvent.event_id)).all()
        assert [(r.status, r.attempts) for r in rows] == [("received", 0)] * 2
        assert all(r.enqueued_at is not None for r in rows)


def test_a_lost_broker_leaves_the_event_received_for_the_sweeper(pg: str) -> None:
    with session_scope(pg) as session:
        dl_id = add_dead_letter(session, dead_event(1))
    with Publisher(DEAD_BROKER, connect_timeout_s=0.5) as publisher:
        report = replay(pg, publisher, [dl_id])
    assert not report.queued and report.replayed
    with session_scope(pg) as session:
        row = session.get(TaggingEvent, "evt-1")
        assert row is not None and (row.status, row.enqueued_at) == ("received", None)
        assert row.received_at > datetime.now(UTC) - timedelta(minutes=1)


# --- migration 0006 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_migration_0006_adds_and_removes_the_replay_columns(dialect: str,
                                                           make_database: Callable[[str], str]) -> None:
    url = make_database(dialect)
    migrate.upgrade(url)
    migrate.check(url)

    def columns() -> set[str]:
        return {c["name"] for c in sa.inspect(get_engine(url)).get_columns("dead_letters")}

    assert {"replayed_at", "replays"} <= columns()
    migrate.downgrade(url, "0005")
    assert not {"replayed_at", "replays"} & columns()
    migrate.upgrade(url)
    migrate.check(url)
