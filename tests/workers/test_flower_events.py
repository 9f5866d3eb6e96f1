"""Flower counts the tagging work: each request of a celery-batches batch sends its own task events.

A real worker (the shared ``main_stack``) and a real ``tagger flower`` on its Redis: good events show
as succeeded tasks with a runtime, a poison message (sent raw, dead-lettered) as a failed task whose
exception is its reason kind, and the worker's processed totals count them. No event data reaches
Flower (the product's title never appears in its task list)."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from tests.workers.procs import wait_for
from tests.workers.stack import Images, Stack, event
from tests.workers.test_flower import flower  # noqa: F401  (the fixture)

AUTH = ("ops", "flower-test-pw")
TASK = "tagger.tag_product"


def get(port: int, path: str, raw: bool = False) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(":".join(AUTH).encode()).decode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
    return body.decode() if raw else json.loads(body)


def test_flower_shows_each_event_of_a_batch(main_stack: Stack, images: Images,
                                            flower: Callable[..., tuple[int, Path]]) -> None:  # noqa: F811
    port, _log = flower(TAGGER_BROKER_URL=main_stack.redis.url, TAGGER_FLOWER_USER=AUTH[0],
                       TAGGER_FLOWER_PASSWORD=AUTH[1])
    # Flower sees events only from the moment it listens: wait until the worker's heartbeats reach it.
    wait_for(lambda: [w for w in get(port, "/workers?json=1")["data"] if w["hostname"].startswith("main-")],
             60, "flower to see the worker's heartbeats", every=1)
    before = get(port, "/api/tasks")

    title = "Flowerwatch Unique Canvas Sneakers"
    good = [event(title=f"{title} {i}", image_uri=images.file_uri(r.id))
            for i, r in enumerate(images.records[:6])]
    from shared.publish import Publisher

    with Publisher(main_stack.redis.url, events_per_message=1) as one_each:
        one_each.publish(good)  # a task per event, as before envelopes
    envelope = [event(title=f"{title} e{i}") for i in range(4)]
    envelope_id = main_stack.publisher.publish(envelope)[0]  # one task for its 4 events
    raw = Celery("raw-producer", broker=main_stack.redis.url, set_as_current=False)
    raw.conf.update(task_serializer="json", broker_connection_retry_on_startup=False)
    try:  # malformed: no valid event at all -> dead-lettered as "malformed"
        poison_id = raw.send_task(TASK, kwargs={"event": {"title": 42}}, queue="tagging").id
    finally:
        raw.close()
    main_stack.db.wait_events([e["event_id"] for e in good + envelope], 90)

    def settled() -> dict | None:
        tasks = {k: v for k, v in get(port, "/api/tasks").items() if k not in before}
        done = [t for t in tasks.values() if t["state"] in ("SUCCESS", "FAILURE")]
        return tasks if len(done) >= len(good) + 2 else None

    tasks = wait_for(settled, 60, "flower to see every task finish", every=1)
    assert isinstance(tasks, dict)
    succeeded = [t for t in tasks.values() if t["state"] == "SUCCESS"]
    assert len(succeeded) == len(good) + 1, tasks
    assert tasks[envelope_id]["result"] == "events=4 succeeded=4", tasks[envelope_id]
    for t in succeeded:
        assert t["name"] == TASK and t["runtime"] > 0 and t["received"] and t["started"], t
        assert t["worker"].startswith("main-"), t
    poison = tasks[poison_id]
    assert poison["state"] == "FAILURE" and poison["exception"] == "dead_lettered: malformed", poison
    assert title not in json.dumps(tasks)  # no event data in Flower: no args, no kwargs

    workers = get(port, "/api/workers?refresh=1")
    [stats] = [w["stats"] for name, w in workers.items() if name.startswith("main-")]
    assert stats["total"].get(TASK, 0) >= len(good) + 2, stats["total"]
    # Flower's own Prometheus counters (behind the same credentials) count them too.
    events = {(s.labels["type"], s.labels["task"]): s.value for fam in text_string_to_metric_families(
        get(port, "/metrics", raw=True)) for s in fam.samples if s.name == "flower_events_total"}
    assert events[("task-succeeded", TASK)] >= len(good) + 1 and events[("task-failed", TASK)] >= 1, events


class FakeRequest:
    def __init__(self, id: str) -> None:  # noqa: A002 (Celery's name)
        self.id, self.sent = id, []

    def send_event(self, type: str, **fields: Any) -> None:  # noqa: A002
        self.sent.append((type, fields))


def test_each_outcome_maps_to_its_task_event() -> None:
    from workers.batching import OUTCOMES, UNACKED, send_outcomes

    reqs = [FakeRequest(i) for i in ("ok", "dead", "again", "kept", "unlisted")]
    report = {OUTCOMES: {"ok": "succeeded", "dead": "failed:refused", "again": "retried:infer_error"},
              UNACKED: ["kept"]}
    send_outcomes(reqs, report, 1.5, {"kept"})
    sent = {r.id: r.sent for r in reqs}
    assert sent["ok"] == [("task-succeeded", {"result": "", "runtime": 1.5})]
    assert sent["dead"] == [("task-failed", {"exception": "dead_lettered: refused", "traceback": ""})]
    assert sent["again"] == [("task-retried", {"exception": "requeued: infer_error", "traceback": ""})]
    assert sent["kept"] == []  # its reject sends task-rejected; it comes back with the same id
    assert sent["unlisted"][0][0] == "task-succeeded"  # acked and not named: the batch handled it


def test_outcomes_mirror_requeue_or_dead_letter() -> None:
    from workers.deliveries import Delivery
    from workers.tagging import _outcomes, per_request

    ds = [Delivery(FakeRequest("bad"), 1, reason="event.title: must be text"),
          Delivery(FakeRequest("old"), 6, event=object(), reason="attempts exhausted"),  # type: ignore[arg-type]
          Delivery(FakeRequest("last"), 5, event=object()),  # type: ignore[arg-type]
          Delivery(FakeRequest("young"), 1, event=object()),  # type: ignore[arg-type]
          Delivery(FakeRequest("stuck"), 1, event=object())]  # type: ignore[arg-type]
    assert per_request(_outcomes(ds, "infer_error", 5, ["stuck"])) == {
        "bad": ["failed:malformed"], "old": ["failed:attempts_exhausted"], "last": ["failed:infer_error"],
        "young": ["retried:infer_error"]}


def test_an_envelope_is_one_task_event_and_each_of_its_events_is_counted() -> None:
    """Flower lists a message as one task; tagger_event_outcomes_total counts every event of it."""
    from prometheus_client import REGISTRY

    from workers.batching import OUTCOMES, send_outcomes

    def counted(outcome: str, kind: str) -> float:
        return REGISTRY.get_sample_value("tagger_event_outcomes_total",
                                         {"outcome": outcome, "kind": kind}) or 0.0

    class Envelope(FakeRequest):
        def __init__(self, id: str, n: int) -> None:  # noqa: A002
            super().__init__(id)
            self.kwargs = {"events": [{}] * n}

    reqs = [Envelope("all-ok", 3), Envelope("mixed", 3), Envelope("all-dead", 2), Envelope("kept", 4),
            Envelope("unlisted", 2)]
    before = {k: counted(*k) for k in (("succeeded", ""), ("failed", "malformed"), ("handed_back", ""))}
    report = {OUTCOMES: {"all-ok": ["succeeded"] * 3,
                         "mixed": ["succeeded", "failed:malformed", "succeeded"],
                         "all-dead": ["failed:malformed", "failed:malformed"]}}
    send_outcomes(reqs, report, 2.0, {"kept"})
    sent = {r.id: r.sent for r in reqs}
    assert sent["all-ok"] == [("task-succeeded", {"result": "events=3 succeeded=3", "runtime": 2.0})]
    assert sent["mixed"] == [("task-succeeded", {"result": "events=3 succeeded=2 failed:malformed=1",
                                                 "runtime": 2.0})]
    assert sent["all-dead"] == [("task-failed", {"exception": "dead_lettered: malformed (2 events)",
                                                 "traceback": ""})]
    assert sent["kept"] == [] and sent["unlisted"][0][1]["result"] == "events=2 succeeded=2"
    assert counted("succeeded", "") - before[("succeeded", "")] == 3 + 2 + 2
    assert counted("failed", "malformed") - before[("failed", "malformed")] == 1 + 2
    assert counted("handed_back", "") - before[("handed_back", "")] == 4
