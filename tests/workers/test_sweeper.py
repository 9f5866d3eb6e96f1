"""Broker down: events are recorded and the answer says queued=false; the sweeper sends them later."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import ApiSettings
from shared.config import Settings
from shared.db.session import get_engine
from shared.publish import BrokerUnavailable, Publisher
from tests.api.conftest import QUEUE, event, queued_event_ids
from tests.api.test_ingest import rows
from workers.sweeper import sweep


def test_broker_down_then_swept(dead_broker_client: TestClient, tokens: dict[str, str], db_url: str,
                                app_settings: Settings, broker: redis.Redis) -> None:
    response = dead_broker_client.post("/v1/events", json=[event(1), event(2)],
                                       headers={"X-API-Key": tokens["producer"]})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": ["evt-1", "evt-2"], "rejected": [], "queued": False}
    recorded = rows(db_url)
    assert set(recorded) == {"evt-1", "evt-2"}
    assert all(r["status"] == "received" and r["enqueued_at"] is None for r in recorded.values())

    with Publisher(app_settings.broker_url, app_settings.tagging_queue) as publisher:
        assert sweep(app_settings, publisher, older_than_s=3600) == 0  # too recent to be a straggler
        assert sweep(app_settings, publisher, older_than_s=0) == 2
        assert sorted(queued_event_ids(broker)) == ["evt-1", "evt-2"]
        assert all(r["enqueued_at"] is not None for r in rows(db_url).values())
        assert sweep(app_settings, publisher, older_than_s=0) == 0  # queued now: left alone
        # Queued but never taken by a worker for longer than lost_after_s: the broker lost it; resend.
        with get_engine(db_url).begin() as connection:
            connection.execute(sa.text("UPDATE tagging_events SET enqueued_at = now() - interval '2 hours'"))
        assert sweep(app_settings, publisher, older_than_s=0, lost_after_s=3600, chunk=1) == 2
    assert len(queued_event_ids(broker)) == 4


def test_unsendable_row_is_marked_failed(app_settings: Settings, db_url: str, broker: redis.Redis) -> None:
    with get_engine(db_url).begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO tagging_events (event_id, product_id, status, attempts, payload, received_at) "
            "VALUES ('evt-x', 'sku-x', 'received', 0, '{\"event_id\": \"evt-x\"}', "
            "now() - interval '1 hour')"))
    with Publisher(app_settings.broker_url, app_settings.tagging_queue) as publisher:
        assert sweep(app_settings, publisher, older_than_s=1) == 0
    row = rows(db_url)["evt-x"]
    assert row["status"] == "failed" and "title: required field is missing" in row["last_error"]
    assert queued_event_ids(broker) == []


def test_broker_full_mid_request_then_swept(tokens: dict[str, str], db_url: str, app_settings: Settings,
                                            broker: redis.Redis) -> None:
    """Redis (noeviction, as deployed) runs out of memory partway through a request's pipeline: some
    messages land, which ones is unknowable, so the API marks none enqueued and answers queued=false;
    a sweep while it is still full changes nothing; once it has room, the sweep sends them all and
    every accepted event is on the queue (the duplicates are de-duplicated by the worker)."""
    auth = {"X-API-Key": tokens["producer"]}
    big = "x" * 9_000  # ~13 kB per message: the memory limit falls well inside one request's 50
    limits = ApiSettings(max_batch=50, max_body_bytes=1_000_000)
    ids = [f"evt-{n}" for n in range(1, 51)]
    # Envelopes of 5: the pipeline carries 10 messages, so the limit can cut it partway.
    with TestClient(create_app(app_settings.model_copy(update={"events_per_message": 5}), limits)) as client:
        warm = client.post("/v1/events", json=event(0, description=big), headers=auth)  # queue declared
        assert warm.json()["queued"] is True
        message_bytes = len(broker.lindex(QUEUE, 0) or b"")
        broker.delete(QUEUE)
        broker.config_set("maxmemory", broker.info("memory")["used_memory"] + 16 * message_bytes)
        try:
            response = client.post("/v1/events", json=[event(n, description=big) for n in range(1, 51)],
                                   headers=auth)
            assert response.status_code == 202, response.text
            assert response.json() == {"accepted": ids, "rejected": [], "queued": False}
            landed = queued_event_ids(broker)
            assert 0 < len(landed) < len(ids), "the limit should cut the request's pipeline partway"
            recorded = rows(db_url)
            assert all(recorded[i]["status"] == "received" and recorded[i]["enqueued_at"] is None
                       for i in ids)

            with Publisher(app_settings.broker_url, app_settings.tagging_queue) as publisher:
                with pytest.raises(BrokerUnavailable):
                    sweep(app_settings, publisher, older_than_s=0)
                assert all(rows(db_url)[i]["enqueued_at"] is None for i in ids)  # the claim rolled back
                broker.config_set("maxmemory", 0)
                assert sweep(app_settings, publisher, older_than_s=0) == len(ids)
        finally:
            broker.config_set("maxmemory", 0)
    on_queue = queued_event_ids(broker)
    assert set(on_queue) == set(ids)
    assert len(on_queue) >= len(ids) + len(landed)  # what landed the first time is there twice
    assert all(r["enqueued_at"] is not None for r in rows(db_url).values())
