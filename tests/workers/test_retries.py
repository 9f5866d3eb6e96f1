"""A whole batch fails (Postgres refuses connections): every event is re-enqueued with its attempt
count and tagged once the database is back, or dead-lettered after max_attempts; none is lost."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from shared.publish import Publisher
from tests.workers.db import Db
from tests.workers.procs import wait_for
from tests.workers.stack import Stack, event

MAX_ATTEMPTS = 2


@pytest.fixture(scope="module")
def retry_stack(make_redis: Callable, make_db: Callable, worker_env: Callable,
                start_worker: Callable) -> Iterator[Stack]:
    redis, url = make_redis(), make_db()
    worker = start_worker("retry", worker_env(redis, url, max_attempts=MAX_ATTEMPTS))
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
    """The message of each event, when Redis holds every one (waiting or delivered, unacked)."""
    held = {m["event"]["event_id"]: m for m in stack.redis.messages() if isinstance(m.get("event"), dict)}
    return held if set(ids) <= held.keys() else None


def test_failed_batch_is_retried_with_its_attempt_count(retry_stack: Stack, admin_engine: sa.Engine) -> None:
    evs = [event(title=t) for t in ("Puma Men Black Running Shoes", "Biba Women Green Kurta",
                                    "Titan Men Silver Watch")]
    ids = [e["event_id"] for e in evs]
    with database_down(admin_engine, retry_stack.db.url):
        retry_stack.publish(*evs)
        # Each event went back to the queue as attempt 2 (after a 2 s back-off) ...
        wait_for(lambda: logged(retry_stack, "requeued event_id={id} attempt=2", ids), 30,
                 "every event re-enqueued as attempt 2")
    # ... and the database is back before that attempt runs.
    rows = retry_stack.db.wait_events(ids, 30)
    assert {(r["status"], r["attempts"]) for r in rows.values()} == {("tagged", 2)}
    assert all(retry_stack.db.tags(e["product_id"]) for e in evs)
    assert retry_stack.db.dead_letters(ids) == []
    wait_for(lambda: retry_stack.redis.backlog() == (0, 0), 10, "Redis to hold nothing")


def test_database_down_past_max_attempts_dead_letters_and_loses_nothing(
    retry_stack: Stack, admin_engine: sa.Engine
) -> None:
    evs = [event(title=t) for t in ("Wrangler Men Blue Jeans", "Lavie Women Brown Handbag")]
    ids = [e["event_id"] for e in evs]
    with database_down(admin_engine, retry_stack.db.url):
        retry_stack.publish(*evs)
        # Attempt 2 failed too and the dead letter could not be written: the events went back
        # to the queue once more instead of being acked and lost ...
        wait_for(lambda: logged(retry_stack, f"requeued event_id={{id}} attempt={MAX_ATTEMPTS + 1}", ids),
                 40, "every event re-enqueued past max_attempts")
        held = wait_for(lambda: in_redis(retry_stack, ids), 5, "every event held in Redis")
        assert all(held[i]["attempt"] > MAX_ATTEMPTS and "OperationalError" in held[i]["last_error"]
                   for i in ids)
    # ... and once the database is back they are dead-lettered, not tagged again.
    dead = wait_for(lambda: len(retry_stack.db.dead_letters(ids)) == len(ids)
                    and retry_stack.db.dead_letters(ids), 40, "dead letters for every event")
    for row in dead:
        assert row["attempts"] > MAX_ATTEMPTS and "OperationalError" in row["reason"]
        assert row["event_id"] in row["payload"]
    rows = retry_stack.db.events(ids)
    assert {r["status"] for r in rows.values()} == {"dead"} and len(rows) == len(ids)
    assert all(retry_stack.db.product(e["product_id"]) is None for e in evs)
    wait_for(lambda: retry_stack.redis.backlog() == (0, 0), 10, "Redis to hold nothing")
