"""Crashes: the worker SIGKILLed mid-batch (messages of one event, then envelopes of several), then
Redis restarted under a running worker. Every event ends tagged exactly once and nothing stays
unacked. One Redis (AOF on) and one worker serve them all."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from shared.publish import Publisher
from shared.tasks import events_of
from tests.servers import CountingListener
from tests.workers.db import Db
from tests.workers.procs import wait_for
from tests.workers.stack import Images, Stack, event

VISIBILITY_S = 5
HUNG_FETCH_S = 2
PREFETCH = 16  # worker_prefetch_multiplier = 2 x TAGGER_BATCH_SIZE (8), one thread


@pytest.fixture(scope="module")
def hung() -> Iterator[CountingListener]:
    """An image host that accepts and never answers: a batch holding one takes HUNG_FETCH_S."""
    lst = CountingListener(silent=True)
    yield lst
    lst.close()


@pytest.fixture(scope="module")
def crash_stack(make_redis: Callable, make_db: Callable, worker_env: Callable, start_worker: Callable
                ) -> Iterator[Stack]:
    redis, url = make_redis(persistent=True), make_db()
    env = worker_env(redis, url, visibility_timeout_s=VISIBILITY_S, allow_file_uris="true",
                     image_hosts='["localhost"]', allow_private_addresses="true",
                     fetch_timeout_s=HUNG_FETCH_S)
    worker = start_worker("crash", env)
    db = Db(url)
    with Publisher(redis.url, events_per_message=1) as publisher:  # PREFETCH counts these messages
        yield Stack(redis, db, worker, publisher)
    db.close()
    worker.stop()  # a worker holds over a gigabyte: do not keep it for the rest of the session


def events(images: Images, n: int, hung: CountingListener, slow: set[int]) -> list[dict]:
    out = []
    for i in range(n):
        rec = images.records[(i * 7) % len(images.records)]
        uri = f"https://localhost:{hung.port}/slow-{i}.jpg" if i in slow else images.file_uri(rec.id)
        out.append(event(title=rec.text, image_uri=uri))
    return out


def assert_tagged_exactly_once(stack: Stack, evs: list[dict], tag_count: int) -> None:
    ids = [e["event_id"] for e in evs]
    rows = stack.db.wait_events(ids, 90, statuses=("tagged",))
    wait_for(lambda: stack.redis.backlog() == (0, 0), 30, "queue and unacked set to empty")
    assert len(rows) == len(ids)
    per_product = stack.db.rows(
        "SELECT product_id, count(*) AS n, count(DISTINCT (axis, value)) AS distinct_n, "
        "max(per_axis) AS widest FROM (SELECT product_id, axis, value, "
        "count(*) OVER (PARTITION BY product_id, axis) AS per_axis FROM product_tags "
        "WHERE product_id = ANY(:p)) t GROUP BY product_id", p=[e["product_id"] for e in evs])
    assert len(per_product) == len(evs)
    for row in per_product:  # one set: the top 3 of each axis, once
        assert (row["n"], row["distinct_n"]) == (tag_count, tag_count) and row["widest"] <= 3, row
    assert stack.db.dead_letters(ids) == []


def test_sigkill_mid_batch_then_restart_tags_every_event_once(
    crash_stack: Stack, images: Images, hung: CountingListener, tag_count: int
) -> None:
    evs = events(images, 40, hung, slow={9, 25})  # the second batch sits in a hung fetch
    ids = [e["event_id"] for e in evs]
    crash_stack.publish(*evs)

    def tagged() -> set[str]:
        return {i for i, r in crash_stack.db.events(ids).items() if r["status"] == "tagged"}

    # Kill while a batch is in flight (a hung fetch) with the prefetch full: the worker is not in
    # the middle of taking a message, where kombu's Redis transport has a window of loss (it pops
    # the message with BRPOP, then records it as unacked in a second command).
    wait_for(lambda: 0 < len(tagged()) < len(ids) and crash_stack.redis.backlog()[1] == PREFETCH, 60,
             "some events tagged and a full prefetch held", every=0.05)
    crash_stack.worker.kill()
    done = tagged()
    held = {e["event_id"] for m in crash_stack.redis.messages() for e in events_of(m)}
    assert 0 < len(done) < len(ids)
    assert set(ids) <= done | held, "every event is either tagged or still held by Redis"

    crash_stack.worker.start()  # its messages come back after the visibility timeout
    assert_tagged_exactly_once(crash_stack, evs, tag_count)


def test_sigkill_mid_batch_of_envelopes_then_restart_tags_every_event_once(
    crash_stack: Stack, images: Images, hung: CountingListener, tag_count: int
) -> None:
    """Envelopes of 5 (batches of 8 events: two envelopes each): an envelope is acked only once all
    its events are written, so the kill leaves every untagged event in a message Redis still holds,
    and the redelivered envelopes re-apply what was already written without a second set of tags."""
    if not crash_stack.worker.alive():
        crash_stack.worker.start()
    evs = events(images, 40, hung, slow={9, 25})  # envelopes 2 and 6 sit in a hung fetch
    ids = [e["event_id"] for e in evs]
    with Publisher(crash_stack.redis.url, events_per_message=5) as publisher:
        publisher.publish(evs)

    def tagged() -> set[str]:
        return {i for i, r in crash_stack.db.events(ids).items() if r["status"] == "tagged"}

    # Every envelope taken off the queue (8 messages: within the prefetch), some written and acked.
    wait_for(lambda: 0 < len(tagged()) < len(ids) and crash_stack.redis.backlog()[0] == 0
             and crash_stack.redis.backlog()[1] > 0, 60, "some events tagged, the rest held", every=0.05)
    crash_stack.worker.kill()
    done = tagged()
    held = crash_stack.redis.messages()
    held_ids = {e["event_id"] for m in held for e in events_of(m)}
    assert 0 < len(done) < len(ids)
    assert all("events" in m and len(m["events"]) == 5 for m in held)  # whole envelopes, unacked
    assert set(ids) <= done | held_ids, "every event is either tagged or still held by Redis"

    crash_stack.worker.start()  # its envelopes come back after the visibility timeout
    assert_tagged_exactly_once(crash_stack, evs, tag_count)


def test_redis_restart_under_a_running_worker(crash_stack: Stack, images: Images, hung: CountingListener,
                                              tag_count: int) -> None:
    if not crash_stack.worker.alive():
        crash_stack.worker.start()
    starts = crash_stack.worker.starts
    before = events(images, 24, hung, slow={3})
    crash_stack.publish(*before)
    # Crash Redis while the worker holds a full prefetch (a batch in a hung fetch, the next one
    # waiting) and more wait in the queue. Not mid-fetch: kombu pops a message (BRPOP) and then
    # records it as unacked in a second command, and a crash between the two loses that message.
    wait_for(lambda: crash_stack.redis.backlog() == (len(before) - PREFETCH, PREFETCH), 20,
             "a full prefetch held and the rest queued")
    crash_stack.redis.kill()  # SIGKILL; AOF with fsync always keeps the queue and the unacked set
    wait_for(lambda: "Connection to broker lost" in crash_stack.worker.log()
             or "Cannot connect to redis" in crash_stack.worker.log(), 30, "the worker to notice")
    crash_stack.redis.start()

    after = events(images, 12, hung, slow=set())
    with Publisher(crash_stack.redis.url) as publisher:
        publisher.publish(after)
    assert_tagged_exactly_once(crash_stack, before + after, tag_count)
    assert crash_stack.worker.alive() and crash_stack.worker.starts == starts  # it resumed by itself
