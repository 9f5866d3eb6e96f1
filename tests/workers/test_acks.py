"""A batch's acks on real Redis: one pipeline for the batch, nothing lost, nothing redelivered.

Messages are published with Celery and received with kombu's Redis transport (so each one sits in
Redis's ``unacked`` hash and ``unacked_index`` as in a worker); the requests are Celery's own
``Request`` objects around them, and ``ReliableBatches.flush`` runs the batch inline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from celery.worker.request import Request
from kombu import Consumer, Queue

from tests.workers.procs import RedisServer
from workers.acks import acknowledge_all
from workers.batching import UNACKED, ReliableBatches

QUEUE = "tagging"


class InlinePool:
    def apply_async(self, target: Callable, args: tuple, accept_callback: Callable,
                    callback: Callable) -> None:
        accept_callback(0, 0.0)
        callback(target(*args))


@pytest.fixture(scope="module")
def redis_server(make_redis: Callable[..., RedisServer]) -> RedisServer:
    return make_redis()


@pytest.fixture
def app(redis_server: RedisServer) -> Iterator[Celery]:
    redis_server.client().flushdb()
    app = Celery("acks-test", set_as_current=False, broker=redis_server.url)
    app.conf.update(task_acks_late=True, task_default_queue=QUEUE, accept_content=["json"],
                    task_serializer="json")
    yield app
    app.close()


def hand_all_off(requests: list) -> dict:
    return {UNACKED: []}


def batch_task(app: Celery, run: Callable[[list], Any]) -> Any:
    task = app.task(base=ReliableBatches, name="t.acks", acks_late=True, flush_every=100,
                    shared=False)(run)
    task._pool = InlinePool()
    return task


class Received:
    """``n`` messages published to Redis and delivered (unacked) to one kombu consumer."""

    def __init__(self, app: Celery, task: Any, n: int) -> None:
        for i in range(n):
            task.apply_async(kwargs={"i": i}, queue=QUEUE)
        self.conn = app.connection_for_read()
        self.channel = self.conn.default_channel
        self.messages: list[Any] = []
        self.consumer = Consumer(self.channel, queues=[Queue(QUEUE)], accept=["json"],
                                 callbacks=[lambda _body, message: self.messages.append(message)])
        self.consumer.consume()
        while len(self.messages) < n:
            self.conn.drain_events(timeout=5)
        self.requests = [
            Request(m, on_ack=m.ack_log_error, on_reject=m.reject_log_error, app=app, task=task,
                    hostname="acks-test", connection_errors=self.conn.connection_errors)
            for m in self.messages
        ]

    def close(self) -> None:
        """Close the consumer's connection: kombu then restores every message still unacked."""
        self.consumer.cancel()
        self.conn.close()


def backlog(redis_server: RedisServer) -> tuple[int, int, int]:
    """(messages waiting in the queue, entries in the unacked hash, entries in its index)."""
    c = redis_server.client()
    return int(c.llen(QUEUE)), int(c.hlen("unacked")), int(c.zcard("unacked_index"))


def count_pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the size of every redis-py pipeline executed (any client)."""
    from redis.client import Pipeline

    sizes: list[int] = []
    original = Pipeline.execute

    def execute(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(self.command_stack))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", execute)
    return sizes


def test_a_batch_is_acked_in_one_pipeline_and_never_redelivered(
        app: Celery, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    task = batch_task(app, hand_all_off)
    got = Received(app, task, 20)
    try:
        assert backlog(redis_server) == (0, 20, 20)  # delivered, recorded unacked
        sizes = count_pipelines(monkeypatch)
        task.flush(got.requests)
        assert sizes == [2]  # one ZREM + one HDEL for the whole batch
        assert backlog(redis_server) == (0, 0, 0)
        assert all(r.acknowledged and r.message.acknowledged for r in got.requests)
        assert acknowledge_all(got.requests) == 0  # nothing is acked twice
    finally:
        got.close()
    assert backlog(redis_server) == (0, 0, 0)  # nothing restored on close: nothing redelivered


def test_kept_ids_are_requeued_and_only_they(app: Celery, redis_server: RedisServer) -> None:
    keep: list[str] = []

    def keep_some(requests: list) -> dict:
        return {UNACKED: keep}

    task = batch_task(app, keep_some)
    got = Received(app, task, 10)
    try:
        keep.extend(got.requests[i].id for i in (2, 7))
        task.flush(got.requests)
        assert backlog(redis_server) == (2, 0, 0)
        assert [r.message._state for r in got.requests] == [
            "REJECTED" if i in (2, 7) else "ACK" for i in range(10)]
    finally:
        got.close()
    assert sorted(m["i"] for m in redis_server.messages(QUEUE)) == [2, 7]


def test_a_batch_that_raised_is_requeued_whole(app: Celery, redis_server: RedisServer) -> None:
    def boom(requests: list) -> dict:
        raise RuntimeError("bug")

    task = batch_task(app, boom)
    got = Received(app, task, 5)
    try:
        task.flush(got.requests)
        assert backlog(redis_server) == (5, 0, 0)
    finally:
        got.close()


def test_a_failed_batched_ack_falls_back_request_by_request(
        app: Celery, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    import workers.acks

    task = batch_task(app, hand_all_off)
    got = Received(app, task, 6)
    try:
        def broken(qos: Any, requests: list) -> None:
            raise redis.ConnectionError("broker gone for a moment")

        monkeypatch.setattr(workers.acks, "_ack_in_one_pipeline", broken)
        assert acknowledge_all(got.requests) == 0
        assert backlog(redis_server) == (0, 0, 0)  # kombu's own ack, one by one
        assert all(r.acknowledged for r in got.requests)
    finally:
        got.close()
    assert backlog(redis_server) == (0, 0, 0)


def test_other_transports_ack_request_by_request() -> None:
    app = Celery("acks-memory", set_as_current=False, broker="memory://")
    app.conf.update(task_acks_late=True, task_default_queue=QUEUE)
    task = batch_task(app, hand_all_off)
    got = Received(app, task, 3)
    try:
        assert acknowledge_all(got.requests) == 0  # not kombu's Redis QoS: Celery's path
        assert all(r.acknowledged and r.message.acknowledged for r in got.requests)
        assert len(got.channel.qos._delivered) - len(got.channel.qos._dirty) == 0
    finally:
        got.close()
