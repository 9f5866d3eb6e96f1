"""The hand-off rules of a failed batch, as plain functions: decode (single events and envelopes),
re-enqueue, dead-letter, ack."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from celery import Celery

from shared.config import Settings
from shared.db.dead_letters import parse_payload
from shared.db.session import session_scope
from shared.db.tags import TaggingResult, apply_batch
from tests.workers.db import Db
from tests.workers.stack import event
from workers.batching import UNACKED, ReliableBatches
from workers.deliveries import decode as decode_all
from workers.deliveries import payload, requeue_or_dead_letter

DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tagger_no_such_database"


@dataclass
class Req:
    kwargs: Any
    args: tuple = ()
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class App:
    """Records ``send_task`` calls; raises when the broker is 'down'."""

    def __init__(self, broker_up: bool = True) -> None:
        self.sent: list[dict] = []
        self.broker_up = broker_up

    def send_task(self, name: str, args: list, kwargs: dict, queue: str, countdown: float) -> None:
        if not self.broker_up:
            raise ConnectionError("broker down")
        self.sent.append({"name": name, "args": args, "countdown": countdown, **kwargs})


@pytest.fixture(scope="module")
def db_url(make_db: Callable[..., str]) -> str:
    return make_db()


def decode(req: Any, max_attempts: int) -> Any:
    """The one delivery of a single-event message."""
    (d,) = decode_all(req, max_attempts)
    return d


@pytest.mark.parametrize(("kwargs", "attempt", "reason"), [
    ({"event": event()}, 1, None),
    ({"event": event(), "attempt": 2}, 2, None),
    ({"event": event(), "attempt": 4, "last_error": "OperationalError: down"}, 4, "OperationalError: down"),
    ({"event": event(), "attempt": "2"}, 1, "attempt: must be a positive integer"),
    ({"event": event(), "attempt": 0}, 1, "attempt: must be a positive integer"),
    ({"event": event(title="a\x00b")}, 1, "event: contains a NUL character"),
    ({"event": {"event_id": "x"}}, 1, "title: required field is missing"),
    ({"event": "text"}, 1, "event: Input should be"),
    ({}, 1, "event: Input should be"),
    (["not", "a", "dict"], 1, "keyword arguments must be an object"),
])
def test_decode_never_raises(kwargs: Any, attempt: int, reason: str | None) -> None:
    d = decode(Req(kwargs), max_attempts=3)
    assert d.attempt == attempt
    assert (d.reason is None) if reason is None else (reason in (d.reason or ""))


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"events": []}, "events: must be a non-empty list of events"),
    ({"events": {"event_id": "x"}}, "events: must be a non-empty list of events"),
    ({"events": [event()] * 1001}, "events: 1001 events in one message, at most 1000"),
    ({"events": [event(), event()], "event": event()}, "message: carries both 'event' and 'events'"),
    ({"events": [event(), event()], "attempt": -1}, "attempt: must be a positive integer"),
])
def test_an_envelope_that_cannot_be_split_is_one_malformed_delivery(kwargs: Any, reason: str) -> None:
    (d,) = decode_all(Req(kwargs), max_attempts=3)
    assert d.event is None and d.reason == reason


def test_an_envelope_is_one_delivery_per_event_and_a_bad_one_fails_alone() -> None:
    good = [event(), event()]
    no_title = event()
    del no_title["title"]
    req = Req({"events": [good[0], no_title, "text", event(title="a\x00b"), good[1]], "attempt": 2})
    ds = decode_all(req, max_attempts=3)
    assert [d.req for d in ds] == [req] * 5 and {d.attempt for d in ds} == {2}
    assert all(d.envelope and d.size == 5 for d in ds)
    assert [d.event.event_id if d.event else None for d in ds] == [good[0]["event_id"], None, None, None,
                                                                   good[1]["event_id"]]
    assert [d.reason for d in ds][::4] == [None, None]
    assert "title: required field is missing" in (ds[1].reason or "")
    assert ds[1].event_id == no_title["event_id"]  # a bad event keeps its id for the dead letter
    assert "Input should be" in (ds[2].reason or "") and ds[2].event_id is None
    assert ds[3].reason == "event: contains a NUL character"
    # Past the last attempt every event of the envelope is due for the dead letter.
    assert {d.reason for d in decode_all(Req({"events": good, "attempt": 4, "last_error": "x"}), 3)} == {"x"}


def test_a_dead_letter_of_an_envelope_event_keeps_that_event_alone_replayable() -> None:
    evs = [event(), event(), event()]
    req = Req({"events": evs, "attempt": 2, "last_error": "RuntimeError: boom"})
    d = decode_all(req, 3)[1]
    doc = __import__("json").loads(payload(d))
    assert doc["kwargs"] == {"event": evs[1], "attempt": 2, "last_error": "RuntimeError: boom"}
    assert doc["envelope"] == {"task_id": req.id, "events": 3}
    assert parse_payload(payload(d)).event_id == evs[1]["event_id"]
    single = Req({"event": evs[0]})  # the single-event message: as it came, as before envelopes
    assert __import__("json").loads(payload(decode(single, 3))) == {"args": [], "kwargs": {"event": evs[0]}}


def test_a_failed_envelope_goes_back_as_one_envelope_and_its_due_events_are_dead_lettered(
    db_url: str,
) -> None:
    app, s = App(), Settings(database_url=db_url, max_attempts=3)
    bad = {"event_id": f"bad-{uuid.uuid4().hex[:6]}"}
    evs = [event(), event(), event()]
    env = Req({"events": [evs[0], bad, evs[1], evs[2]]})
    single = Req({"event": event()})
    ds = decode_all(env, 3) + decode_all(single, 3)
    assert requeue_or_dead_letter(app, s, ds, "RuntimeError: boom") == []
    assert [(m["attempt"], m["countdown"], m["last_error"]) for m in app.sent] == [
        (2, 2, "RuntimeError: boom"), (2, 2, "RuntimeError: boom")]
    assert [e["event_id"] for e in app.sent[0]["events"]] == [e["event_id"] for e in evs]  # one message
    assert "event" not in app.sent[0]
    assert app.sent[1]["event"]["event_id"] == single.kwargs["event"]["event_id"]
    db = Db(db_url)
    try:
        (dead,) = db.dead_letters([bad["event_id"]])
        assert "title: required field is missing" in dead["reason"]
    finally:
        db.close()


def test_failed_batch_requeues_with_next_attempt_and_backoff(db_url: str) -> None:
    app, s = App(), Settings(database_url=db_url, max_attempts=3)
    first, second = Req({"event": event()}), Req({"event": event(), "attempt": 2})
    left = requeue_or_dead_letter(app, s, [decode(first, 3), decode(second, 3)], "RuntimeError: boom")
    assert left == []
    assert [(m["attempt"], m["countdown"], m["last_error"]) for m in app.sent] == [
        (2, 2, "RuntimeError: boom"), (3, 4, "RuntimeError: boom")]
    assert [m["event"]["event_id"] for m in app.sent] == [first.kwargs["event"]["event_id"],
                                                         second.kwargs["event"]["event_id"]]


def test_last_attempt_and_malformed_are_dead_lettered_when_the_database_is_up(db_url: str) -> None:
    app, s = App(), Settings(database_url=db_url, max_attempts=3)
    last = Req({"event": event(), "attempt": 3})
    malformed = Req({"event": {"event_id": f"bad-{uuid.uuid4().hex[:6]}"}})
    assert requeue_or_dead_letter(app, s, [decode(last, 3), decode(malformed, 3)], "RuntimeError: boom") == []
    assert app.sent == []
    db = Db(db_url)
    try:
        ev_id = last.kwargs["event"]["event_id"]
        (dl,) = db.dead_letters([ev_id])
        assert (dl["attempts"], dl["reason"]) == (3, "RuntimeError: boom")
        row = db.events([ev_id])[ev_id]
        assert (row["status"], row["attempts"], row["last_error"]) == ("dead", 3, "RuntimeError: boom")
        (bad,) = db.dead_letters([malformed.kwargs["event"]["event_id"]])
        assert "title: required field is missing" in bad["reason"]
    finally:
        db.close()


def test_a_tagged_event_is_not_dead_lettered_by_a_late_failing_copy(db_url: str) -> None:
    ev = event()
    with session_scope(db_url) as session:
        apply_batch(session, [TaggingResult(
            event_id=ev["event_id"], product_id=ev["product_id"], seller_id="s", title="t", description=None,
            image_uri=None, locale=None, occurred_at=datetime.now(UTC), content_hash="h", model_version="m")])
    app, s = App(), Settings(database_url=db_url, max_attempts=1)
    assert requeue_or_dead_letter(app, s, [decode(Req({"event": ev}), 1)], "RuntimeError: boom") == []
    db = Db(db_url)
    try:
        assert db.events([ev["event_id"]])[ev["event_id"]]["status"] == "tagged"
        assert db.dead_letters([ev["event_id"]]) == []
    finally:
        db.close()


def test_database_down_requeues_even_what_is_due_for_dead_letter() -> None:
    app, s = App(), Settings(database_url=DOWN_URL, max_attempts=2)
    due, malformed = Req({"event": event(), "attempt": 2}), Req({"event": {"event_id": "m"}})
    assert requeue_or_dead_letter(app, s, [decode(due, 2), decode(malformed, 2)], "RuntimeError: x") == []
    assert [m["attempt"] for m in app.sent] == [3, 2]
    assert decode(Req({k: v for k, v in app.sent[0].items() if k in ("event", "attempt", "last_error")}),
                  2).reason == "RuntimeError: x"  # next time: straight to the dead letter


def test_database_and_broker_down_leaves_the_messages_unacked() -> None:
    app, s = App(broker_up=False), Settings(database_url=DOWN_URL, max_attempts=2)
    reqs = [Req({"event": event()}), Req({"event": event(), "attempt": 2})]
    left = requeue_or_dead_letter(app, s, [decode(r, 2) for r in reqs], "RuntimeError: x")
    assert left == [r.id for r in reqs]
    env = Req({"events": [event(), event(), event()]})
    assert requeue_or_dead_letter(app, s, decode_all(env, 2), "RuntimeError: x") == [env.id]  # once


# --- the ack rule in ReliableBatches.flush ------------------------------------------------------

class FakeRequest:
    """What celery-batches needs of a worker request, recording ack and reject."""

    def __init__(self, task: Any) -> None:
        self.id, self.task, self.name = uuid.uuid4().hex, task, task.name
        self._payload = ((), {"event": {}}, {})
        self.delivery_info, self.hostname, self.reply_to, self.correlation_id = {}, "h", None, None
        self.request_dict: dict = {}
        self.outcome: str | None = None

    def acknowledge(self) -> None:
        self.outcome = self.outcome or "ack"

    def reject(self, requeue: bool = False) -> None:
        self.outcome = self.outcome or f"reject(requeue={requeue})"


class InlinePool:
    def apply_async(self, target: Callable, args: tuple, accept_callback: Callable,
                    callback: Callable) -> None:
        accept_callback(0, 0.0)
        callback(target(*args))


def batch_task(run: Callable[[list], Any]) -> Any:
    app = Celery("flush-test", set_as_current=False)
    task = app.task(base=ReliableBatches, name="t.batch", acks_late=True, flush_every=10, shared=False)(run)
    task._pool = InlinePool()
    return task


def test_flush_acks_what_was_handed_on_and_requeues_the_rest() -> None:
    keep: list[str] = []

    def run(requests: list) -> dict:
        return {UNACKED: keep}

    task = batch_task(run)
    reqs = [FakeRequest(task) for _ in range(3)]
    keep.append(reqs[1].id)
    task.flush(reqs)
    assert [r.outcome for r in reqs] == ["ack", "reject(requeue=True)", "ack"]


def test_flush_requeues_everything_when_the_batch_raises() -> None:
    def boom(requests: list) -> dict:
        raise RuntimeError("bug")

    task = batch_task(boom)
    reqs = [FakeRequest(task) for _ in range(2)]
    task.flush(reqs)
    assert [r.outcome for r in reqs] == ["reject(requeue=True)"] * 2
