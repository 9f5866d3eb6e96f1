"""Publishing to the real Redis broker: Celery messages of one event or an envelope of up to
``events_per_message``, pipelined, JSON only, no torch, what a lost broker means, and the CLI."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.client
import redis.connection
from celery import Celery
from celery.worker.request import Request
from celery_batches import SimpleRequest
from pydantic import ValidationError

from shared.events import ProductUploaded, format_errors
from shared.publish import PIPELINE_EVENTS, BrokerUnavailable, Publisher, PublisherConfigError
from shared.tasks import TAG_PRODUCT, events_of
from tests.private_redis import flushed, private_redis_url
from tests.workers.procs import RedisServer
from workers.deliveries import Delivery, decode

REDIS_URL = private_redis_url()  # a redis-server of this test run's own
DEAD_URL = "redis://:s3cret@127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once
QUEUE = "tagging"
ROOT = Path(__file__).resolve().parents[2]


def event(n: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"evt-{n}", "product_id": f"sku-{n}", "seller_id": "seller-1",
            "title": f"Product {n}", "occurred_at": "2025-06-01T10:00:00+00:00", **extra}


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    with flushed(REDIS_URL) as client:
        yield client


def queued(client: redis.Redis, queue: str = QUEUE) -> list[dict[str, Any]]:
    """Decode every Celery (protocol 2) message on a Redis queue list into headers + kwargs."""
    messages = []
    for raw in client.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        assert envelope["content-type"] == "application/json"
        assert envelope["properties"]["body_encoding"] == "base64"
        args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        assert args == []
        messages.append({"headers": envelope["headers"], "kwargs": kwargs})
    return messages


def queued_event_ids(client: redis.Redis) -> set[str]:
    return {e["event_id"] for m in queued(client) for e in events_of(m["kwargs"])}


def taken_by_worker(url: str, n: int) -> list[Delivery]:
    """Take ``n`` messages off the queue the way a tagging worker does: a kombu consumer, Celery's
    protocol-2 ``Request``, celery-batches' ``SimpleRequest``, then the worker's own ``decode``."""
    app = Celery("worker-side", broker=url, set_as_current=False)
    app.conf.update(accept_content=["json"], broker_connection_retry_on_startup=False)

    @app.task(name=TAG_PRODUCT.name, shared=False)
    def tag_product(**_: Any) -> None:
        """Stands in for the worker's task: only its name matters here."""

    requests: list[SimpleRequest] = []

    def on_message(message: Any) -> None:
        assert message.headers["task"] == TAG_PRODUCT.name  # protocol 2: the task name is a header
        request = Request(message, app=app, task=tag_product, hostname="test@host")
        requests.append(SimpleRequest.from_request(request))
        message.ack()

    queues = [app.amqp.queues.select_add(QUEUE)]
    with app.connection_for_read() as conn, app.amqp.TaskConsumer(conn, queues=queues, on_message=on_message):
        while len(requests) < n:
            conn.drain_events(timeout=5)
    app.close()
    return [d for r in requests for d in decode(r, max_attempts=3)]


class PipelineSpy:
    """Records the commands of every Redis pipeline this process executes (the calls still go through)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.executed: list[list[str]] = []
        real = redis.client.Pipeline.execute

        def execute(pipe: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
            self.executed.append([str(cmd[0]).upper() for cmd, _options in pipe.command_stack])
            return real(pipe, *args, **kwargs)

        monkeypatch.setattr(redis.client.Pipeline, "execute", execute)

    def lpush_sizes(self) -> list[int]:
        """Messages per pipeline that carried messages (kombu's own pipelines, e.g. LLEN, left out)."""
        return [names.count("LPUSH") for names in self.executed if "LPUSH" in names]


def test_one_message_per_event_whose_body_is_the_event(broker: redis.Redis) -> None:
    """events_per_message=1: the messages every producer sent before envelopes."""
    events = [ProductUploaded.model_validate(event(1, image_uri="s3://b/k.jpg")), event(2), event(3)]
    with Publisher(REDIS_URL, QUEUE, events_per_message=1) as publisher:
        ids = publisher.publish(events)
    assert len(ids) == len(set(ids)) == 3
    messages = queued(broker)
    assert len(messages) == 3
    assert {m["headers"]["task"] for m in messages} == {TAG_PRODUCT.name}
    assert {m["headers"]["id"] for m in messages} == set(ids)
    by_id = {m["kwargs"]["event"]["event_id"]: m["kwargs"] for m in messages}
    for raw in events:
        model = ProductUploaded.model_validate(raw)
        assert by_id[model.event_id] == {"event": model.model_dump(mode="json")}
        assert ProductUploaded.model_validate(by_id[model.event_id]["event"]) == model


def test_envelopes_carry_the_events_in_order_and_share_their_message_id(broker: redis.Redis) -> None:
    events = [ProductUploaded.model_validate(event(n, image_uri=f"s3://b/{n}.jpg")) for n in range(7)]
    with Publisher(REDIS_URL, QUEUE, events_per_message=3) as publisher:
        ids = publisher.publish(events)
    messages = queued(broker)[::-1]  # LPUSH: newest first
    assert [len(events_of(m["kwargs"])) for m in messages] == [3, 3, 1]
    assert [m["headers"]["id"] for m in messages] == [ids[0], ids[3], ids[6]]
    assert ids[:3] == [ids[0]] * 3 and ids[3:6] == [ids[3]] * 3 and len(set(ids)) == 3
    assert messages[0]["kwargs"] == {"events": [e.model_dump(mode="json") for e in events[:3]]}
    assert messages[2]["kwargs"] == {"event": events[6].model_dump(mode="json")}  # one alone: as before
    assert messages[0]["headers"]["kwargsrepr"] == "{'events': [3 events: 'evt-0' ... 'evt-2']}"


def test_the_default_is_the_settings_default_and_out_of_range_is_refused() -> None:
    from shared.config import Settings

    with Publisher(REDIS_URL, QUEUE) as publisher:
        assert publisher.events_per_message == Settings().events_per_message == 50
    s = Settings(broker_url=REDIS_URL, events_per_message=7)
    with Publisher.from_settings(s) as publisher:
        assert publisher.events_per_message == 7
    for bad in (0, 1001):
        with pytest.raises(PublisherConfigError, match="events_per_message"):
            Publisher(REDIS_URL, QUEUE, events_per_message=bad)


@pytest.mark.parametrize(("per", "messages"), [(1, 50), (50, 1), (20, 3)])
def test_a_call_is_one_pipeline_and_each_message_is_one_the_worker_accepts(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch, per: int, messages: int,
) -> None:
    events = [ProductUploaded.model_validate(event(n, image_uri=f"s3://b/{n}.jpg")) for n in range(50)]
    with Publisher(REDIS_URL, QUEUE, events_per_message=per) as publisher:
        publisher.check()
        spy = PipelineSpy(monkeypatch)
        ids = publisher.publish(events)
    assert spy.lpush_sizes() == [messages], "50 events should go out in one Redis round trip"
    assert broker.llen(QUEUE) == messages
    headers = [m["headers"] for m in queued(broker)]
    assert all(len(h["kwargsrepr"]) < 100 and h["argsrepr"] == "()" for h in headers)  # no payload copy
    deliveries = taken_by_worker(REDIS_URL, messages)
    assert {d.req.id for d in deliveries} == set(ids)
    assert all(d.req.name == TAG_PRODUCT.name and d.attempt == 1 and d.reason is None for d in deliveries)
    assert sorted((d.event for d in deliveries), key=lambda e: int(e.event_id[4:])) == events


def test_a_big_call_is_several_pipelines(broker: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 2 * PIPELINE_EVENTS + 200
    with Publisher(REDIS_URL, QUEUE, events_per_message=1) as publisher:
        spy = PipelineSpy(monkeypatch)
        ids = publisher.publish([event(i) for i in range(n)])
    assert len(set(ids)) == n and broker.llen(QUEUE) == n
    assert spy.lpush_sizes() == [PIPELINE_EVENTS, PIPELINE_EVENTS, 200]


def test_a_big_call_of_envelopes_is_several_pipelines_of_whole_envelopes(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 2 * PIPELINE_EVENTS + 200
    with Publisher(REDIS_URL, QUEUE, events_per_message=30) as publisher:  # 480 events a pipeline
        spy = PipelineSpy(monkeypatch)
        ids = publisher.publish([event(i) for i in range(n)])
    assert len(ids) == n and queued_event_ids(broker) == {f"evt-{i}" for i in range(n)}
    assert spy.lpush_sizes() == [16, 16, 8]  # 480 + 480 + 240 events: whole envelopes of 30
    assert sorted(len(events_of(m["kwargs"])) for m in queued(broker))[:2] == [30, 30]


def test_the_message_is_the_one_celery_sends_but_for_the_short_reprs(broker: redis.Redis) -> None:
    """The worker sees what a plain ``send_task`` (the publisher before pipelining) would send."""
    payload = ProductUploaded.model_validate(event(1, image_uri="s3://b/k.jpg")).model_dump(mode="json")
    with Publisher(REDIS_URL, QUEUE) as publisher:
        publisher.publish([payload])
    reference = Celery("reference", broker=REDIS_URL, set_as_current=False)
    reference.conf.update(task_serializer="json", accept_content=["json"], result_backend=None)
    reference.send_task(TAG_PRODUCT.name, kwargs={"event": payload}, queue=QUEUE, serializer="json",
                        ignore_result=True)
    reference.close()
    ours, theirs = (json.loads(raw) for raw in broker.lrange(QUEUE, 0, -1)[::-1])  # LPUSH: newest first
    per_message = {"id", "root_id", "correlation_id", "delivery_tag", "reply_to", "argsrepr", "kwargsrepr"}
    assert ours["body"] == theirs["body"]
    assert {k: v for k, v in ours.items() if k not in ("headers", "properties")} == {
        k: v for k, v in theirs.items() if k not in ("headers", "properties")}
    assert ({k: v for k, v in ours["headers"].items() if k not in per_message}
            == {k: v for k, v in theirs["headers"].items() if k not in per_message})
    assert ours["headers"]["kwargsrepr"] == "{'event': {'event_id': 'evt-1', ...}}"
    assert ours["headers"]["argsrepr"] == theirs["headers"]["argsrepr"] == "()"
    # Celery copies explicit reprs into the properties too; nothing reads them there.
    assert set(ours["properties"]) - set(theirs["properties"]) <= {"argsrepr", "kwargsrepr"}
    assert ({k: v for k, v in ours["properties"].items() if k not in per_message}
            == {k: v for k, v in theirs["properties"].items() if k not in per_message})


def test_publish_signals_still_fire_when_a_host_service_connects_them(broker: redis.Redis) -> None:
    """Messages are built by Celery and published by kombu directly, which skips Celery's publish
    signals; a host service that connects them gets every message through send_task instead."""
    from celery.signals import after_task_publish, before_task_publish

    seen: list[tuple[str, str]] = []

    def before(sender: str, headers: dict, **_: Any) -> None:
        seen.append(("before", headers["id"]))

    def after(sender: str, headers: dict, **_: Any) -> None:
        seen.append(("after", headers["id"]))

    with Publisher(REDIS_URL, QUEUE, events_per_message=1) as publisher:
        publisher.publish([event(1)])  # nothing connected: the direct path
        assert seen == []
        before_task_publish.connect(before, weak=False)
        after_task_publish.connect(after, weak=False)
        try:
            ids = publisher.publish([event(2), event(3)])
        finally:
            before_task_publish.disconnect(before)
            after_task_publish.disconnect(after)
        assert Publisher._signals_connected() is False
        publisher.events_per_message = 2
        before_task_publish.connect(before, weak=False)
        after_task_publish.connect(after, weak=False)
        try:
            ids += publisher.publish([event(4), event(5)])  # one envelope through send_task
        finally:
            before_task_publish.disconnect(before)
            after_task_publish.disconnect(after)
    assert [kind for kind, _ in seen] == ["before", "after"] * 3
    assert {task_id for _, task_id in seen} == set(ids)
    assert len(queued(broker)) == 4
    assert queued_event_ids(broker) == {f"evt-{i}" for i in range(1, 6)}


@pytest.mark.parametrize("per", [1, 50])
def test_broker_lost_mid_call_knows_only_whole_pipelines(tmp_path: Path, per: int) -> None:
    """The broker dies (SIGKILL) while a call is being sent: ``sent`` counts the confirmed pipelines,
    every one of those events is on the queue once the broker is back (AOF, fsync always), and
    re-publishing the rest delivers every event; some of the failed pipeline may arrive twice."""
    server = RedisServer(tmp_path, persistent=True)
    events = [event(i) for i in range(10 * PIPELINE_EVENTS)]
    try:
        client = server.client()
        with Publisher(server.url, QUEUE, events_per_message=per) as publisher:
            publisher.check()

            def kill_after_first_pipeline() -> None:
                while client.llen(QUEUE) < PIPELINE_EVENTS // per:
                    time.sleep(0.001)
                server.kill()

            killer = threading.Thread(target=kill_after_first_pipeline, daemon=True)
            killer.start()
            with pytest.raises(BrokerUnavailable, match="known to be queued") as info:
                publisher.publish(events)
            killer.join(10)
            sent = info.value.sent
            assert sent % PIPELINE_EVENTS == 0 and sent < len(events)

            server.start()
            client = server.client()
            on_queue = queued_event_ids(client)
            assert {f"evt-{i}" for i in range(sent)} <= on_queue  # known queued: really there
            assert len(on_queue) < len(events)
            publisher.publish(events[sent:])
        assert queued_event_ids(client) == {e["event_id"] for e in events}
        assert client.llen(QUEUE) >= len(events) // per
    finally:
        server.kill()


def test_an_invalid_dict_stops_the_batch_before_anything_is_sent(broker: redis.Redis) -> None:
    with Publisher(REDIS_URL, QUEUE) as publisher, pytest.raises(ValidationError):
        publisher.publish([event(1), event(2, colour="red")])
    assert broker.llen(QUEUE) == 0


@pytest.mark.parametrize(("bad", "reason"), [
    ({"occurred_at": "9999-12-31T00:00:00Z"}, "occurred_at: is more than 300 s in the future"),
    ({"occurred_at": "9999-12-31T23:59:59-14:00"}, "occurred_at: out of range once converted to UTC"),
    ({"product_id": "shoes/red"}, "product_id: must not contain '/'"),
    ({"event_id": "e\x00"}, "event_id: contains a NUL character"),
])
def test_the_publisher_refuses_what_the_api_refuses(
    broker: redis.Redis, bad: dict[str, str], reason: str,
) -> None:
    """The Python producer's door is the same contract (shared.events), not a copy of it."""
    with Publisher(REDIS_URL, QUEUE) as publisher, pytest.raises(ValidationError) as info:
        publisher.publish([event(1), event(2, **bad)])
    assert format_errors(info.value)[0].startswith(reason)
    assert broker.llen(QUEUE) == 0


def test_a_batch_reuses_one_pooled_connection(broker: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    sockets = []
    real_connect = redis.connection.Connection._connect

    def counting_connect(self: redis.connection.Connection) -> Any:
        sockets.append(1)
        return real_connect(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", counting_connect)
    with Publisher(REDIS_URL, QUEUE) as publisher:
        publisher.check()
        publisher.publish([event(n) for n in range(100)])
        publisher.publish([event(n) for n in range(100, 200)])
    assert len(queued_event_ids(broker)) == 200 and broker.llen(QUEUE) == 4  # envelopes of 50
    assert len(sockets) <= 3, f"{len(sockets)} sockets opened for 200 events"


def test_in_memory_broker_is_refused() -> None:
    with pytest.raises(PublisherConfigError, match="TAGGER_BROKER_URL.*memory://"):
        Publisher("memory://")


def test_unreachable_broker_fails_fast_and_names_the_setting() -> None:
    publisher = Publisher(DEAD_URL, QUEUE, connect_timeout_s=2)
    with pytest.raises(BrokerUnavailable, match="TAGGER_BROKER_URL") as info:
        publisher.check()
    assert "s3cret" not in str(info.value)
    with pytest.raises(BrokerUnavailable) as info:
        publisher.publish([event(1)])
    assert info.value.sent == 0 and "s3cret" not in str(info.value)
    publisher.close()


def test_a_broker_that_accepts_and_never_answers_fails_within_the_reply_timeout() -> None:
    """A hung Redis (the port accepts, nothing replies) must not hold an API request thread forever."""
    from tests.servers import CountingListener

    hung = CountingListener(silent=True)
    try:
        publisher = Publisher(f"redis://127.0.0.1:{hung.port}/0", QUEUE, connect_timeout_s=1.0,
                              reply_timeout_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            publisher.publish([event(1)])
        assert time.monotonic() - t0 < 30  # retries x reply timeout, not forever
        assert hung.accepted >= 1
        publisher.close()
    finally:
        hung.close()


def test_publishing_never_imports_torch(broker: redis.Redis) -> None:
    script = textwrap.dedent(f"""
        import sys
        from shared.publish import Publisher
        with Publisher({REDIS_URL!r}, {QUEUE!r}) as p:
            p.publish([{event(7)!r}])
        heavy = sorted(m for m in ("torch", "torchvision", "transformers", "timm", "shared.ml", "workers")
                       if m in sys.modules)
        assert not heavy, heavy
        print("published without", "torch")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "published without torch" in proc.stdout
    assert queued_event_ids(broker) == {"evt-7"}


def test_long_lists_are_cut_in_whole_envelopes() -> None:
    from shared.publish import whole_envelopes

    assert whole_envelopes(200, 50) == 200 and whole_envelopes(200, 30) == 180
    assert whole_envelopes(200, 300) == 300  # one envelope, bigger than the limit, is never split
    assert whole_envelopes(500, 1) == 500
