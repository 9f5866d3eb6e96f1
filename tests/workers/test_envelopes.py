"""Envelopes on the worker side: a message of many events is flattened into events, a batch runs once
``batch_size`` EVENTS are buffered, the model never sees more than ``batch_size`` at once, a poison
event of an envelope is dead-lettered alone, and the single-event messages of before envelopes are
still read (in the same batch as envelopes)."""

from __future__ import annotations

import json
import re
import time
import uuid
from types import SimpleNamespace
from typing import Any

from celery import Celery

from shared.config import Settings
from shared.stopwatch import Stopwatch
from tests.workers.procs import wait_for
from tests.workers.stack import Stack, event
from workers.batching import ReliableBatches, _EventfulBuffer, events_in, flush_due
from workers.tagging import Runtime, _infer_waiting

# --- counting events, not messages ---------------------------------------------------------------


class Req:
    def __init__(self, kwargs: Any) -> None:
        self.id, self.kwargs, self.eta = uuid.uuid4().hex, kwargs, None
        self.name, self.root_id, self.parent_id, self.request_dict, self.expires = "t", None, None, {}, None

    def send_event(self, *_: Any, **__: Any) -> None:
        pass


def test_events_in_counts_an_envelope_and_anything_else_as_one() -> None:
    assert events_in(Req({"events": [{}, {}, {}]})) == 3
    others = ({"event": {}}, {"events": []}, {"events": "x"}, ["x"], None)
    assert [events_in(Req(k)) for k in others] == [1] * 5


def test_a_flush_runs_once_the_buffered_messages_hold_batch_size_events() -> None:
    app = Celery("flush-count", set_as_current=False)
    flushed: list[list[Any]] = []

    @app.task(base=ReliableBatches, name="t.count", flush_every=8, flush_interval=60, shared=False)
    def run(requests: list) -> None:
        """Never run: flush is recorded instead."""

    run._buffer = _EventfulBuffer()
    run.flush = lambda requests: flushed.append(list(requests))  # type: ignore[method-assign]
    run._first_at = __import__("time").monotonic()  # young: only a full batch flushes
    run._buffer.put(Req({"events": [{}] * 5}))
    run._do_flush()
    assert flushed == [] and run._buffer.events == 5  # 1 message, 5 events: not yet
    run._buffer.put(Req({"event": {}}))
    run._buffer.put(Req({"events": [{}] * 3}))  # 9 events in 3 messages: full
    run._do_flush()
    assert [len(f) for f in flushed] == [3] and run._buffer.events == 0
    assert flush_due(9, 8, 0.0, 0.1, 60) and not flush_due(7, 8, 0.0, 0.1, 60)


# --- the model sees at most batch_size events at once ---------------------------------------------


class CountingTagger:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, items: list, top_k: int = 3, watch: Any = None) -> list:
        self.calls.append(len(items))
        return [SimpleNamespace(image_error=None, text=it.text) for it in items]


class NoFetch:
    def fetch_many(self, uris: list) -> list:
        return [None] * len(uris)


def test_the_model_runs_in_pieces_of_at_most_batch_size_events() -> None:
    from shared.events import ProductUploaded

    tagger = CountingTagger()
    rt = Runtime(settings=Settings(batch_size=8), tagger=tagger, fetcher=NoFetch())  # type: ignore[arg-type]
    events = [ProductUploaded.model_validate(event(title=f"Shoe {i}")) for i in range(21)]
    out = _infer_waiting(rt, events, tagger, Stopwatch())
    assert tagger.calls == [8, 8, 5]
    assert [p.text for p, _ in out] == [e.title for e in events]  # in order, one per event


# --- a real worker --------------------------------------------------------------------------------


def test_a_poison_event_of_an_envelope_is_dead_lettered_alone_and_old_messages_still_work(
    main_stack: Stack, raw_app: Celery, tag_count: int,
) -> None:
    good = [event(title=t) for t in ("Nike Men White Sports Shoes", "Lakme Women Red Lipstick",
                                     "Roadster Men Blue Jeans", "Titan Men Silver Watch")]
    marker = uuid.uuid4().hex[:8]
    no_title = event(product_id=f"p-{marker}")
    del no_title["title"]
    nul = event(title=f"Nul\x00 {marker}")
    legacy = event(title="Biba Women Green Kurta")
    before = main_stack.worker.count("batch_tagged")
    # One envelope with two poison events between good ones, and a message of before envelopes.
    raw_app.send_task("tagger.tag_product", queue="tagging",
                      kwargs={"events": [good[0], no_title, good[1], nul, good[2]]})
    raw_app.send_task("tagger.tag_product", queue="tagging", kwargs={"event": legacy})
    main_stack.publish(good[3])  # the Publisher: one event alone is the single-event message

    ids = [e["event_id"] for e in [*good, legacy]]
    rows = main_stack.db.wait_events(ids, 60)
    assert {(r["status"], r["attempts"]) for r in rows.values()} == {("tagged", 1)}
    for ev in [*good, legacy]:
        assert len(main_stack.db.tags(ev["product_id"])) == tag_count
    dead = wait_for(lambda: main_stack.db.dead_letters([no_title["event_id"]]), 30, "a dead letter")
    assert "title: required field is missing" in dead[0]["reason"]
    doc = json.loads(dead[0]["payload"])  # that event alone, as a single-event message
    assert doc["kwargs"] == {"event": no_title} and doc["envelope"]["events"] == 5
    assert good[0]["title"] not in dead[0]["payload"]  # not its envelope-mates' data
    [nul_dead] = main_stack.db.dead_letters([nul["event_id"]])
    assert nul_dead["reason"] == "event: contains a NUL character"
    wait_for(lambda: main_stack.redis.backlog() == (0, 0), 30, "every message acked")
    # The batches counted events: the envelope's 5 (2 dead-lettered), the legacy one, the Publisher's.
    lines = re.findall(r"batch_tagged n=(\d+) dead_lettered=(\d+).* messages=(\d+)", main_stack.worker.log())
    seen = [(int(n), int(d), int(m)) for n, d, m in lines[before:]]
    assert sum(n for n, _, _ in seen) >= 7 and sum(d for _, d, _ in seen) >= 2, seen


def test_prefetch_counts_events_so_a_worker_holds_a_few_envelopes_not_its_message_limit(
    main_stack: Stack, raw_app: Celery,
) -> None:
    """kombu's prefetch is 2 x batch_size MESSAGES per thread (16 here: batch 8, one thread). With
    envelopes of 10 events the worker must hold only what 16 events need (workers.prefetch): two
    envelopes, one in its batch and one buffered, not all eight published."""
    wait_for(lambda: main_stack.redis.backlog() == (0, 0), 30, "a quiet queue")
    marker = uuid.uuid4().hex[:6]
    envelopes = [[event(title=f"Roadster Men Blue Jeans {marker} {k}.{i}") for i in range(10)]
                 for k in range(8)]
    for events in envelopes:
        raw_app.send_task("tagger.tag_product", queue="tagging", kwargs={"events": events})
    peak, deadline = 0, time.monotonic() + 120
    while time.monotonic() < deadline:
        waiting, held = main_stack.redis.backlog()
        peak = max(peak, held)
        if (waiting, held) == (0, 0):
            break
        time.sleep(0.005)
    rows = main_stack.db.wait_events([e["event_id"] for evs in envelopes for e in evs], 60)
    assert {r["status"] for r in rows.values()} == {"tagged"} and len(rows) == 80
    assert 1 <= peak <= 2, f"the worker held {peak} envelopes of 10 events at once"


def test_the_event_window_counts_held_events_skips_eta_requests_and_follows_kombus_acks() -> None:
    """workers.prefetch.EventWindow on kombu's own virtual-transport QoS (the Redis channel's base):
    room while under the events limit or under the message floor; a request with an ETA counts as
    no event; an acked tag no longer counts; installing twice never stacks the wrapper."""
    from kombu.transport.virtual import QoS

    from workers.prefetch import EventWindow

    qos = QoS(channel=SimpleNamespace(do_restore=False), prefetch_count=100)  # nothing to restore
    window = EventWindow(max_events=30, min_messages=2)
    window.install(qos)
    window.install(qos)

    def deliver(tag: int, events: int, eta: str | None = None) -> None:
        qos.append(SimpleNamespace(), tag)  # what kombu does when a message arrives
        window.taken(SimpleNamespace(message=SimpleNamespace(delivery_tag=tag), eta=eta), events)

    assert qos.can_consume()
    deliver(1, 50)  # one envelope over the limit: still room, under the message floor
    assert qos.can_consume() and window.held(qos) == (1, 50)
    deliver(2, 50)
    assert not qos.can_consume()  # two messages, 100 events
    deliver(3, 10, eta="2030-01-01T00:00:00")  # a retry waiting for its countdown: no event
    assert window.held(qos) == (2, 100)
    qos.ack(1)
    assert window.held(qos) == (1, 50) and qos.can_consume()
    qos.ack(2)
    deliver(4, 5)
    deliver(5, 5)
    assert window.held(qos) == (2, 10) and qos.can_consume()  # under 30 events: more may come
    qos.prefetch_count = 3  # kombu's own message limit still applies
    assert not qos.can_consume()
