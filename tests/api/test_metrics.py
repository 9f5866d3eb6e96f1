"""GET /metrics: Prometheus text for any valid reader/admin key; ingest counts and queue depths are in it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from shared.config import Settings
from shared.metrics import set_queue_depth
from shared.tasks import TAG_PRODUCT
from tests.api.conftest import LIMITS, QUEUE, REDIS_URL, event


def _value(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_metrics_after_post(client: TestClient, tokens: dict[str, str]) -> None:
    accepted, rejected = _value("tagger_events_accepted_total"), _value("tagger_events_rejected_total")
    answer = client.post("/v1/events", json=[event(1), {"event_id": "bad"}],
                         headers={"Authorization": f"Bearer {tokens['producer']}"})
    assert answer.status_code == 202
    assert _value("tagger_events_accepted_total") == accepted + 1
    assert _value("tagger_events_rejected_total") == rejected + 1

    got = client.get("/metrics", headers={"X-API-Key": tokens["reader"]})
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/plain")
    assert "tagger_events_accepted_total" in got.text
    assert client.get("/metrics", headers={"X-API-Key": tokens["admin"]}).status_code == 200
    # Every request is timed under its route template (the app installs the timer itself).
    timed = 'tagger_http_request_seconds_count{method="POST",route="/v1/events",status="2xx"}'
    assert timed in client.get("/metrics", headers={"X-API-Key": tokens["reader"]}).text


def test_metrics_needs_a_key(client: TestClient, tokens: dict[str, str]) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": "tg_nope_nope"}).status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": tokens["producer"]}).status_code == 403


# --- queue depth, read from the broker at scrape time -----------------------------------------


def _scrape(client: TestClient, token: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics parsed the way Prometheus reads it: (sample name, sorted labels) -> value."""
    got = client.get("/metrics", headers={"X-API-Key": token})
    assert got.status_code == 200, got.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(got.text) for s in family.samples}


def _depth(samples: dict, queue: str) -> float | None:
    return samples.get(("tagger_queue_depth", (("queue", queue),)))


@pytest.fixture
def producer(client: TestClient, tokens: dict[str, str]) -> Callable[[list[int]], None]:
    def post(numbers: list[int]) -> None:
        answer = client.post("/v1/events", json=[event(n) for n in numbers],
                             headers={"Authorization": f"Bearer {tokens['producer']}"})
        assert answer.status_code == 202 and answer.json()["queued"] is True, answer.text

    return post


def test_queue_depth_is_what_ingest_queued(client: TestClient, tokens: dict[str, str], broker: redis.Redis,
                                           producer: Callable[[list[int]], None]) -> None:
    assert _depth(_scrape(client, tokens["reader"]), QUEUE) == 0  # the queue list does not exist yet
    producer([1, 2, 3])
    producer([4, 5])
    samples = _scrape(client, tokens["admin"])
    # Messages, not events: each request's events went out as one envelope (TAGGER_EVENTS_PER_MESSAGE).
    assert broker.llen(QUEUE) == 2  # the truth, straight from Redis
    assert _depth(samples, QUEUE) == 2
    assert _depth(samples, "training") == 0  # the training queue is configured by default: reported too
    assert samples[("tagger_broker_up", ())] == 1

    broker.rpop(QUEUE)  # a worker took one: the next scrape reads the new depth, nothing cached
    assert _depth(_scrape(client, tokens["reader"]), QUEUE) == 1


def test_queue_depth_sums_kombu_priority_lists(client: TestClient, tokens: dict[str, str],
                                               broker: redis.Redis) -> None:
    """A task sent with a priority lands on a suffixed list (kombu's Redis transport): still waiting."""
    app = Celery("test-priority", broker=REDIS_URL, set_as_current=False)
    try:
        for priority in (None, 0, 5, 9):
            app.send_task(TAG_PRODUCT.name, kwargs={"event": event(priority or 0)}, queue=QUEUE,
                          priority=priority)
    finally:
        app.close()
    assert broker.llen(QUEUE) == 2  # so the other two are on priority lists: the sum must include them
    assert _depth(_scrape(client, tokens["reader"]), QUEUE) == 4


def test_scrape_answers_when_the_broker_is_dead(dead_broker_client: TestClient,
                                               tokens: dict[str, str]) -> None:
    set_queue_depth(QUEUE, 42)  # as a scrape with a live broker left it
    started = time.perf_counter()
    samples = _scrape(dead_broker_client, tokens["reader"])
    assert time.perf_counter() - started < 2.0
    assert _depth(samples, QUEUE) is None  # no stale or made-up depth
    assert samples[("tagger_broker_up", ())] == 0
    assert ("tagger_events_accepted_total", ()) in samples  # the rest of the scrape is intact


def test_scrape_is_bounded_when_the_broker_hangs(db_url: str, tokens: dict[str, str]) -> None:
    """A broker that accepts the connection and never answers: the read times out, the scrape answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes connections; nobody ever reads or replies
        port = silent.getsockname()[1]
        settings = Settings(database_url=db_url, broker_url=f"redis://127.0.0.1:{port}/0",
                            tagging_queue=QUEUE)
        with TestClient(create_app(settings, LIMITS.model_copy(update={"readiness_timeout_s": 0.3}))) as app:
            started = time.perf_counter()
            samples = _scrape(app, tokens["reader"])
            elapsed = time.perf_counter() - started
    assert 0.3 <= elapsed < 2.0  # it did wait for the broker, then gave up at the timeout
    assert _depth(samples, QUEUE) is None and samples[("tagger_broker_up", ())] == 0
