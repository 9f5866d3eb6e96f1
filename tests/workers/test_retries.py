"""Postgres refuses connections to the worker's database (a real outage, not the events' fault): the
batch waits, unacked, and is tagged once the database is back; past TAGGER_OUTAGE_MAX_WAIT_S it goes
back to the broker as it was. No attempt is counted, nothing is dead-lettered, nothing is lost."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from shared.publish import Publisher
from shared.tasks import events_of
from tests.workers.db import Db
from tests.workers.procs import wait_for
from tests.workers.stack import Stack, event

MAX_ATTEMPTS = 2


@pytest.fixture(scope="module")
def retry_stack(make_redis: Callable, make_db: Callable, worker_env: Callable,
                start_worker: Callable) -> Iterator[Stack]:
    redis, url = make_redis(), make_db()
    worker = start_worker("retry", worker_env(redis, url, max_attempts=MAX_ATTEMPTS,
                                                    outage_max_wait_s=4, outage_backoff_max_s=1))
    db = Db(url)
    with Publisher(redis.url) as publisher:
        yield Stack(redis, db, worker, publisher)
    db.close()
    worker.stop()  # a worker holds over a gigabyte: do not keep it for the rest of the session


@contextmanager
def database_down(admin: sa.Engine, url: str) -> Iterator[None]:
    """Postgres refuses every new connection to the database and drops the open ones."""
    name = sa.make_url(url).database
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def logged(stack: Stack, text: str, ids: list[str]) -> bool:
    log = stack.worker.log()
    return all(f"{text.format(id=i)}" in log for i in ids)


def in_redis(stack: Stack, ids: list[str]) -> dict[str, dict] | None:
    """The message (one event's or an envelope's) of each event, when Redis holds every one (waiting
    or delivered, unacked)."""
    held = {e["event_id"]: m for m in stack.redis.messages() for e in events_of(m) if isinstance(e, dict)}
    return held if set(ids) <= held.keys() else None


def test_a_short_outage_is_waited_out_and_counts_no_attempt(
    retry_stack: Stack, admin_engine: sa.Engine,
) -> None:
    evs = [event(title=t) for t in ("Puma Men Black Running Shoes", "Biba Women Green Kurta",
                                    "Titan Men Silver Watch")]
    ids = [e["event_id"] for e in evs]
    waits = retry_stack.worker.count("write_waits_for_database")
    with database_down(admin_engine, retry_stack.db.url):
        retry_stack.publish(*evs)
        wait_for(lambda: retry_stack.worker.count("write_waits_for_database") > waits, 30,
                 "the batch to wait for the database")
        time.sleep(2)
    rows = retry_stack.db.wait_events(ids, 30)
    assert {(r["status"], r["attempts"]) for r in rows.values()} == {("tagged", 1)}
    assert all(retry_stack.db.tags(e["product_id"]) for e in evs)
    assert retry_stack.db.dead_letters(ids) == [] and "requeued event_id" not in retry_stack.worker.log()
    wait_for(lambda: retry_stack.redis.backlog() == (0, 0), 10, "Redis to hold nothing")


def test_a_long_outage_hands_the_batch_back_to_the_broker_and_loses_nothing(
    retry_stack: Stack, admin_engine: sa.Engine
) -> None:
    evs = [event(title=t) for t in ("Wrangler Men Blue Jeans", "Lavie Women Brown Handbag")]
    ids = [e["event_id"] for e in evs]
    handed = retry_stack.worker.count("batch_handed_back")
    with database_down(admin_engine, retry_stack.db.url):
        retry_stack.publish(*evs)
        # Past TAGGER_OUTAGE_MAX_WAIT_S the batch goes back to Redis unacked, as it was (attempt 1) ...
        wait_for(lambda: retry_stack.worker.count("batch_handed_back") > handed, 40, "the batch handed back")
        held = wait_for(lambda: in_redis(retry_stack, ids), 10, "every event held in Redis")
        assert all(held[i].get("attempt", 1) == 1 and not held[i].get("last_error") for i in ids)
    # ... and once the database is back they are tagged: never dead-lettered for an outage.
    rows = retry_stack.db.wait_events(ids, 60, statuses=("tagged",))
    assert {r["attempts"] for r in rows.values()} == {1}
    assert retry_stack.db.dead_letters(ids) == []
    wait_for(lambda: retry_stack.redis.backlog() == (0, 0), 10, "Redis to hold nothing")
