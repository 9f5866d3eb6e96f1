"""The outbox (shared/outbox.py) through the Python Publisher: record and commit, send, mark enqueued;
what the sweeper recovers when the broker loses a message or is down, and what a database outage means."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from shared.config import Settings
from shared.db.migrate import upgrade
from shared.db.session import get_engine
from shared.publish import BrokerUnavailable, OutboxUnavailable, Publisher
from tests.api.conftest import QUEUE, REDIS_URL, event, queued_event_ids
from tests.private_redis import flushed
from tests.shared.db.conftest import make_database  # noqa: F401  (fixture)
from tests.shared.test_publish import DEAD_URL, ROOT
from workers.sweeper import sweep


@pytest.fixture(scope="module")
def migrated(request: pytest.FixtureRequest) -> str:
    url = request.getfixturevalue("make_database")("postgresql")
    upgrade(url)
    return url


@pytest.fixture
def database(migrated: str) -> Iterator[str]:
    """A migrated Postgres database, its events emptied after each test."""
    yield migrated
    with get_engine(migrated).begin() as connection:
        connection.exec_driver_sql("TRUNCATE tagging_events")


@pytest.fixture
def queue() -> Iterator[redis.Redis]:
    """The test run's private Redis, flushed before and after each test."""
    with flushed(REDIS_URL) as client:
        yield client


DEAD_DB = "postgresql+psycopg://postgres@127.0.0.1:1/none"  # nothing listens on port 1


def rows(url: str) -> dict[str, dict[str, Any]]:
    with get_engine(url).connect() as connection:
        return {r.event_id: dict(r._mapping) for r in connection.execute(sa.text(
            "SELECT event_id, status, enqueued_at, payload FROM tagging_events"))}


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, broker_url=REDIS_URL, tagging_queue=QUEUE)


def test_publish_records_commits_then_sends_and_marks(database: str, queue: redis.Redis) -> None:
    with Publisher(REDIS_URL, QUEUE, database_url=database) as publisher:
        ids = publisher.publish([event(1), event(2)])
    assert len(ids) == 2
    assert sorted(queued_event_ids(queue)) == ["evt-1", "evt-2"]
    got = rows(database)
    assert {k: v["status"] for k, v in got.items()} == {"evt-1": "received", "evt-2": "received"}
    assert all(v["enqueued_at"] is not None for v in got.values())
    assert got["evt-1"]["payload"]["title"] == event(1)["title"]


def test_from_settings_opts_in_and_defaults_to_the_broker_alone(database: str) -> None:
    with Publisher.from_settings(settings_for(database)) as plain:
        assert plain.database_url is None  # the sweeper and backfill send what is already recorded
    with Publisher.from_settings(settings_for(database), outbox=True) as recording:
        assert recording.database_url == database


def test_known_events_are_sent_again_only_while_received(database: str, queue: redis.Redis) -> None:
    with Publisher(REDIS_URL, QUEUE, database_url=database) as publisher:
        publisher.publish([event(1), event(2)])
        with get_engine(database).begin() as connection:
            connection.execute(sa.text(
                "UPDATE tagging_events SET status = 'tagged' WHERE event_id = 'evt-1'"))
        queue.delete(QUEUE)
        assert len(publisher.publish([event(1), event(2), event(3)])) == 2
    assert sorted(queued_event_ids(queue)) == ["evt-2", "evt-3"]


def test_a_message_the_broker_loses_is_sent_again_by_the_sweeper(database: str, queue: redis.Redis) -> None:
    """The kombu window, played deterministically: the message is queued and marked, then vanishes
    (popped by a worker SIGKILLed before its unacked record). Its row is still 'received', so the
    sweeper sends it again once ``lost_after_s`` has passed, and not before."""
    with Publisher(REDIS_URL, QUEUE, database_url=database) as publisher:
        publisher.publish([event(1)])
    assert queue.rpop(QUEUE) is not None  # what BRPOP did; the worker dies before HSET unacked
    with Publisher(REDIS_URL, QUEUE) as sweeping:  # the sweeper sends rows it holds: no outbox
        assert sweep(settings_for(database), sweeping, older_than_s=0, lost_after_s=3600) == 0
        assert sweep(settings_for(database), sweeping, older_than_s=0, lost_after_s=0) == 1
    assert queued_event_ids(queue) == ["evt-1"]


def test_the_sweeper_refuses_a_publisher_with_an_outbox(database: str) -> None:
    """It would record rows it holds locked, in a second connection: a wait on itself, forever."""
    with Publisher(REDIS_URL, QUEUE, database_url=database) as publisher, pytest.raises(ValueError):
        sweep(settings_for(database), publisher, older_than_s=0)


def test_broker_down_leaves_the_events_recorded_for_the_sweeper(database: str, queue: redis.Redis) -> None:
    with Publisher(DEAD_URL, QUEUE, database_url=database, connect_timeout_s=1) as publisher, \
            pytest.raises(BrokerUnavailable) as caught:
        publisher.publish([event(1), event(2)])
    assert caught.value.recorded and caught.value.total == 2
    assert "recorded in the outbox" in str(caught.value) and "s3cret" not in str(caught.value)
    got = rows(database)
    assert set(got) == {"evt-1", "evt-2"} and all(v["enqueued_at"] is None for v in got.values())
    with Publisher(REDIS_URL, QUEUE) as sweeper_publisher:
        assert sweep(settings_for(database), sweeper_publisher, older_than_s=0) == 2
    assert sorted(queued_event_ids(queue)) == ["evt-1", "evt-2"]


def test_database_down_sends_nothing(queue: redis.Redis) -> None:
    with Publisher(REDIS_URL, QUEUE, database_url=DEAD_DB) as publisher, \
            pytest.raises(OutboxUnavailable) as caught:
        publisher.publish([event(1)])
    assert "nothing was sent" in str(caught.value)
    assert queued_event_ids(queue) == []


def test_an_invalid_event_records_nothing(database: str, queue: redis.Redis) -> None:
    with Publisher(REDIS_URL, QUEUE, database_url=database) as publisher, pytest.raises(ValueError):
        publisher.publish([event(1), event(2, title="")])
    assert rows(database) == {} and queued_event_ids(queue) == []


def test_the_publisher_module_imports_no_database_until_an_outbox_publish() -> None:
    script = textwrap.dedent("""
        import sys
        from shared.publish import Publisher
        p = Publisher("redis://127.0.0.1:1/0", database_url="postgresql+psycopg://x@127.0.0.1:1/x")
        assert not {"sqlalchemy", "psycopg"} & set(sys.modules), sorted(sys.modules)
        print("light")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "light" in proc.stdout


def test_deferred_marks_ride_in_the_next_record_transaction(database: str) -> None:
    """record_and_send with DeferredMarks: the sent ids stay unmarked after the call, are written by
    the next call's record transaction, go back to pending when that transaction fails, and
    DeferredMarks.flush writes them on their own."""
    from sqlalchemy.exc import OperationalError

    from shared.events import ProductUploaded
    from shared.outbox import DeferredMarks, record_and_send

    marks, sent = DeferredMarks(), []

    def send(payloads: list[dict[str, Any]]) -> int:
        sent.extend(p["event_id"] for p in payloads)
        return len(payloads)

    def one(n: int) -> list[ProductUploaded]:
        return [ProductUploaded.model_validate(event(n))]

    assert record_and_send(database, one(1), send, marks) == 1
    assert rows(database)["evt-1"]["enqueued_at"] is None and len(marks) == 1
    record_and_send(database, one(2), send, marks)
    found = rows(database)
    assert found["evt-1"]["enqueued_at"] is not None and found["evt-2"]["enqueued_at"] is None
    with pytest.raises(OperationalError):  # the database refuses: evt-2's mark stays pending
        record_and_send(DEAD_DB, one(3), send, marks)
    assert len(marks) == 1 and sent == ["evt-1", "evt-2"]
    with pytest.raises(OperationalError):
        marks.flush(DEAD_DB)
    assert len(marks) == 1
    assert marks.flush(database) == 1 and len(marks) == 0 and marks.flush(database) == 0
    assert rows(database)["evt-2"]["enqueued_at"] is not None
    record_and_send(database, one(4), send)  # without DeferredMarks: marked before it returns
    assert rows(database)["evt-4"]["enqueued_at"] is not None


def test_recording_and_marking_earlier_events_is_one_statement(database: str) -> None:
    """On Postgres a round with pending marks sends ONE statement (autocommit: no BEGIN, no COMMIT):
    the events recorded and the earlier ids marked together. It is atomic: when the insert fails
    (a trigger refuses one id), the earlier marks are not written either and stay pending. An event
    sent again while its own mark is pending is recorded once, sent again and marked."""
    from sqlalchemy import event as sa_event

    from shared.events import ProductUploaded
    from shared.outbox import DeferredMarks, record_and_send

    marks, sent, statements = DeferredMarks(), [], []

    def send(payloads: list[dict[str, Any]]) -> int:
        sent.extend(p["event_id"] for p in payloads)
        return len(payloads)

    def one(n: int) -> list[ProductUploaded]:
        return [ProductUploaded.model_validate(event(n))]

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = get_engine(database)
    record_and_send(database, one(1), send, marks)
    sa_event.listen(engine, "before_cursor_execute", seen)
    try:
        record_and_send(database, one(2), send, marks)
    finally:
        sa_event.remove(engine, "before_cursor_execute", seen)
    assert len(statements) == 1, statements
    found = rows(database)
    assert found["evt-1"]["enqueued_at"] is not None and found["evt-2"]["enqueued_at"] is None

    with engine.begin() as connection:  # a real refusal from the server, for evt-3 only
        connection.exec_driver_sql("""
            CREATE FUNCTION refuse_evt3() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.event_id = 'evt-3' THEN RAISE EXCEPTION 'refused for the test'; END IF;
            RETURN NEW; END $$;
            CREATE TRIGGER refuse_evt3 BEFORE INSERT ON tagging_events
            FOR EACH ROW EXECUTE FUNCTION refuse_evt3()""")
    try:
        with pytest.raises(sa.exc.DBAPIError, match="refused for the test"):
            record_and_send(database, one(3), send, marks)
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "DROP TRIGGER refuse_evt3 ON tagging_events; DROP FUNCTION refuse_evt3()")
    assert rows(database)["evt-2"]["enqueued_at"] is None and "evt-3" not in rows(database)
    assert len(marks) == 1  # evt-2's mark, back to pending

    record_and_send(database, one(2), send, marks)  # evt-2 again, while its own mark is pending
    assert sent == ["evt-1", "evt-2", "evt-2"]
    assert rows(database)["evt-2"]["enqueued_at"] is not None and len(marks) == 1
