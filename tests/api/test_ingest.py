"""POST /v1/events: recorded first, then queued; bad events fail alone; limits named; idempotent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from shared.db.session import get_engine
from shared.db.tags import TaggingResult, apply_batch
from tests.api.conftest import LIMITS, REDIS_URL, event, queued_event_ids
from tests.shared.test_publish import PipelineSpy, taken_by_worker


@pytest.fixture
def auth(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['producer']}"}


def rows(db_url: str) -> dict[str, dict]:
    with get_engine(db_url).connect() as connection:
        result = connection.execute(sa.text("SELECT * FROM tagging_events ORDER BY event_id"))
        return {row.event_id: row._asdict() for row in result}


def test_single_event(client: TestClient, auth: dict[str, str], db_url: str, broker: redis.Redis) -> None:
    response = client.post("/v1/events", json=event(1), headers=auth)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": ["evt-1"], "rejected": [], "queued": True}
    row = rows(db_url)["evt-1"]
    assert row["status"] == "received" and row["product_id"] == "sku-1"
    assert row["payload"]["title"] == "Product 1"
    assert queued_event_ids(broker) == ["evt-1"]
    assert marked_soon(db_url, {"evt-1"})  # deferred: written once the API is idle


def marked_soon(db_url: str, event_ids: set[str], within_s: float = 5.0) -> bool:
    """Every one of ``event_ids`` marked enqueued within ``within_s`` (deferred marks are written
    after the answer, by the API on its own)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = rows(db_url)
        if all(found[e]["enqueued_at"] is not None for e in event_ids):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("defer", [True, False])
def test_defer_marks_setting(app_settings, tokens: dict[str, str], db_url: str, broker: redis.Redis,
                             defer: bool) -> None:
    """TAGGER_API_INGEST_DEFER_MARKS: on (default), a round's marks are pending after its answer and
    written by the next round's transaction or once idle; off, written before the answer."""
    from api.app import create_app
    from api.config import ApiSettings

    assert ApiSettings().ingest_defer_marks is True
    api = ApiSettings(max_batch=LIMITS.max_batch, max_body_bytes=LIMITS.max_body_bytes,
                      ingest_defer_marks=defer)
    app = create_app(app_settings, api)
    with TestClient(app) as client:
        for n in range(5):
            response = client.post("/v1/events", json=[event(n), event(n + 100)],
                                   headers={"Authorization": f"Bearer {tokens['producer']}"})
            assert response.status_code == 202 and response.json()["queued"] is True, response.text
            if not defer:  # marked before the answer
                assert rows(db_url)[f"evt-{n}"]["enqueued_at"] is not None
        ids = {f"evt-{n}" for n in [*range(5), *range(100, 105)]}
        assert marked_soon(db_url, ids)
        assert len(app.state.tagger.marks) == 0
    assert sorted(queued_event_ids(broker)) == sorted(ids)


@pytest.mark.parametrize("rounds", [0, 2])
def test_ingest_rounds_setting(app_settings, tokens: dict[str, str], db_url: str, broker: redis.Redis,
                               rounds: int) -> None:
    """TAGGER_API_INGEST_ROUNDS: 0 (each request its own outbox round) and more than the default
    record and queue the same way; the app's group commit runs that many rounds at once."""
    from api.app import create_app
    from api.config import ApiSettings

    api = ApiSettings(max_batch=LIMITS.max_batch, max_body_bytes=LIMITS.max_body_bytes, ingest_rounds=rounds)
    with TestClient(create_app(app_settings, api)) as client:
        for n in range(3):
            response = client.post("/v1/events", json=event(n),
                                   headers={"Authorization": f"Bearer {tokens['producer']}"})
            assert response.status_code == 202 and response.json()["queued"] is True, response.text
        group = getattr(client.app.state, "ingest_group_commit", None)
        assert (group is None) if rounds == 0 else (group.in_flight == rounds)
    assert set(rows(db_url)) == {"evt-0", "evt-1", "evt-2"}
    assert sorted(queued_event_ids(broker)) == ["evt-0", "evt-1", "evt-2"]
    assert ApiSettings().ingest_rounds == 1


def test_batch(client: TestClient, auth: dict[str, str], db_url: str, broker: redis.Redis,
               monkeypatch: pytest.MonkeyPatch) -> None:
    spy = PipelineSpy(monkeypatch)
    response = client.post("/v1/events", json=[event(n) for n in range(3)], headers=auth)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == ["evt-0", "evt-1", "evt-2"]
    assert set(rows(db_url)) == {"evt-0", "evt-1", "evt-2"}
    assert sorted(queued_event_ids(broker)) == ["evt-0", "evt-1", "evt-2"]
    assert spy.lpush_sizes() == [1]  # the request's events: one envelope, one Redis round trip
    taken = taken_by_worker(REDIS_URL, 1)
    assert [d.event.event_id for d in taken if d.event] == ["evt-0", "evt-1", "evt-2"]
    assert all(d.reason is None and d.envelope for d in taken)


def test_bad_event_fails_alone(client: TestClient, auth: dict[str, str], db_url: str,
                               broker: redis.Redis) -> None:
    bad = event(2, imageUri="s3://b/k")
    del bad["title"]
    response = client.post("/v1/events", json=[event(1), bad, "nope", event(3)], headers=auth)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == ["evt-1", "evt-3"] and body["queued"] is True
    assert body["rejected"] == [
        {"index": 1, "event_id": "evt-2",
         "errors": ["title: required field is missing",
                    "imageUri: unknown field (not part of product.uploaded v1)"]},
        {"index": 2, "event_id": None, "errors": ["event: expected a JSON object"]},
    ]
    assert set(rows(db_url)) == {"evt-1", "evt-3"}
    assert sorted(queued_event_ids(broker)) == ["evt-1", "evt-3"]


def test_all_bad_is_422(client: TestClient, auth: dict[str, str], db_url: str, broker: redis.Redis) -> None:
    response = client.post("/v1/events", json=[event(1, locale="!!"), {"event_id": 5}], headers=auth)
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == [] and body["queued"] is False
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    assert body["rejected"][0]["errors"] == ["locale: expected a language tag like 'en-IN'"]
    assert body["rejected"][1]["event_id"] is None
    assert rows(db_url) == {} and queued_event_ids(broker) == []


def test_duplicate_event_id_is_one_row(client: TestClient, auth: dict[str, str], db_url: str,
                                       broker: redis.Redis) -> None:
    first = client.post("/v1/events", json=[event(1), event(1)], headers=auth)
    assert first.json()["accepted"] == ["evt-1"]
    again = client.post("/v1/events", json=event(1), headers=auth)
    assert again.status_code == 202 and again.json()["accepted"] == ["evt-1"]
    assert list(rows(db_url)) == ["evt-1"]
    # Still 'received': sent again (the first send may not have arrived); the worker de-duplicates.
    assert queued_event_ids(broker) == ["evt-1", "evt-1"]


def test_tagged_event_is_not_requeued(client: TestClient, auth: dict[str, str], db_url: str,
                                      broker: redis.Redis) -> None:
    client.post("/v1/events", json=event(1), headers=auth)
    broker.flushdb()
    # The worker's write path moves the API's 'received' row to 'tagged' (an upsert by event_id).
    with sa.orm.Session(get_engine(db_url)) as session:
        apply_batch(session, [TaggingResult(
            event_id="evt-1", product_id="sku-1", seller_id="seller-1", title="Product 1", description=None,
            image_uri=None, locale=None, occurred_at=datetime(2025, 6, 1, 10, tzinfo=UTC),
            content_hash="h", model_version="v1", tags=[("colour", "red", 0.9, "auto")])])
        session.commit()
    row = rows(db_url)["evt-1"]
    assert row["status"] == "tagged" and row["payload"]["event_id"] == "evt-1"

    response = client.post("/v1/events", json=event(1), headers=auth)
    assert response.status_code == 202 and response.json()["queued"] is True
    assert queued_event_ids(broker) == [] and len(rows(db_url)) == 1


def test_batch_over_limit_is_413(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    response = client.post("/v1/events", json=[event(n) for n in range(LIMITS.max_batch + 1)], headers=auth)
    assert response.status_code == 413
    body = response.json()
    assert "max_batch" in body["detail"] and f"limit of {LIMITS.max_batch} events" in body["detail"]
    assert body["limit"] == {"name": "max_batch", "value": LIMITS.max_batch}
    assert rows(db_url) == {}


def test_body_over_limit_is_413(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    big = json.dumps(event(1, description="x" * LIMITS.max_body_bytes))
    response = client.post("/v1/events", content=big, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["detail"]
    assert f"limit of {LIMITS.max_body_bytes} bytes" in response.json()["detail"]
    assert rows(db_url) == {}


def test_body_over_limit_without_content_length_is_413(client: TestClient, auth: dict[str, str]) -> None:
    def chunks() -> Iterator[bytes]:  # a streamed (chunked) body declares no length up front
        body = json.dumps(event(1, description="x" * LIMITS.max_body_bytes)).encode()
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = client.post("/v1/events", content=chunks(), headers=auth)
    assert response.status_code == 413
    assert response.json()["limit"]["name"] == "max_body_bytes"


@pytest.mark.parametrize("body", [b"{not json", b"42", b"[]"])
def test_unusable_body_is_400(client: TestClient, auth: dict[str, str], body: bytes) -> None:
    response = client.post("/v1/events", content=body, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
