"""``tagger worker`` on the CPU with its defaults runs two batches at once, cores / 2 torch threads
each: both pool threads are warmed before work, and concurrent batches holding the same events and
products still leave exactly one set of rows each (sorted upserts: no deadlock, no duplicate)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from shared.publish import Publisher
from tests.workers.db import Db
from tests.workers.procs import wait_for
from tests.workers.stack import Images, Stack, event


@pytest.fixture(scope="module")
def duo_stack(make_redis: Callable, make_db: Callable, worker_env: Callable, start_worker: Callable
              ) -> Iterator[Stack]:
    redis, url = make_redis(), make_db()
    env = worker_env(redis, url, allow_file_uris="true", batch_size=4)
    worker = start_worker("duo", env, concurrency=0)  # `tagger worker`, defaults
    db = Db(url)
    with Publisher(redis.url) as publisher:
        yield Stack(redis, db, worker, publisher)
    db.close()
    worker.stop()


def test_two_batches_at_once_tag_each_event_once(duo_stack: Stack, images: Images, tag_count: int) -> None:
    log = duo_stack.worker.log()
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert f"2 batch(es) at once, torch threads {threads}" in log
    assert f"torch_threads={threads}" in log and "pool_warmed threads=2" in log

    # 12 products; every event sent twice and every product re-sent under a second event id, in an
    # order that puts copies of the same product into different batches of 4 running side by side.
    firsts = [event(title=r.text, image_uri=images.file_uri(r.id)) for r in images.records[:12]]
    seconds = [{**e, "event_id": e["event_id"] + "-again"} for e in firsts]
    for k in range(0, 12, 2):
        duo_stack.publish(firsts[k], firsts[k + 1], seconds[k], seconds[k + 1], firsts[k], seconds[k])

    ids = [e["event_id"] for e in firsts + seconds]
    rows = duo_stack.db.wait_events(ids, 120, statuses=("tagged",))
    wait_for(lambda: duo_stack.redis.backlog() == (0, 0), 30, "queue and unacked set to empty")
    assert {r["attempts"] for r in rows.values()} == {1}, "a batch failed and was retried"
    assert duo_stack.db.dead_letters(ids) == []
    per_product = duo_stack.db.rows(
        "SELECT product_id, count(*) AS n, count(DISTINCT (axis, value)) AS distinct_n "
        "FROM product_tags WHERE product_id = ANY(:p) GROUP BY product_id",
        p=[e["product_id"] for e in firsts])
    assert len(per_product) == 12
    assert all(r["n"] == r["distinct_n"] == tag_count for r in per_product), per_product
    assert "batch_failed" not in duo_stack.worker.log()
