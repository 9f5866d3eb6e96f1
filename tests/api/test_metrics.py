"""GET /metrics: Prometheus text for any valid reader/admin key; ingest counts show up in it."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.api.conftest import event


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


def test_metrics_needs_a_key(client: TestClient, tokens: dict[str, str]) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": "tg_nope_nope"}).status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": tokens["producer"]}).status_code == 403
