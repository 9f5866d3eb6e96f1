"""/healthz answers while the process runs; /readyz names the dependency that is down."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from api.app import create_app
from shared.config import Settings
from tests.api.conftest import LIMITS, REDIS_URL


def test_healthz_needs_no_key(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_ok(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_broker_down(dead_broker_client: TestClient) -> None:
    started = time.monotonic()
    response = dead_broker_client.get("/readyz")
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "ok", "broker": "down"}
    assert body["detail"] == "broker unreachable"


def test_readyz_database_down() -> None:
    settings = Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/none", broker_url=REDIS_URL)
    with TestClient(create_app(settings, LIMITS)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "down"
    assert "database" in response.json()["detail"]
