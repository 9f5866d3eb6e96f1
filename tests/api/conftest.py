"""API fixtures: one fresh migrated Postgres database per session, Redis db 10, keys for every role."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import ApiSettings
from shared.apikeys import ROLES, create_key
from shared.config import Settings
from shared.db.migrate import upgrade
from shared.db.session import get_engine, session_scope
from tests.private_redis import flushed, private_redis_url
from tests.shared.db.conftest import make_database  # noqa: F401  (fixture)

REDIS_URL = private_redis_url()  # a redis-server of this test run's own
DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once
QUEUE = "tagging"
LIMITS = ApiSettings(max_batch=5, max_body_bytes=20_000)


@pytest.fixture(scope="session")
def api_db_url(make_database: Callable[[str], str]) -> str:  # noqa: F811
    """A Postgres database built the production way: ``alembic upgrade head``."""
    url = make_database("postgresql")
    upgrade(url)
    return url


@pytest.fixture
def db_url(api_db_url: str) -> Iterator[str]:
    """The session database, emptied after each test (the app commits for real, so no rollback trick)."""
    yield api_db_url
    with get_engine(api_db_url).begin() as connection:
        connection.exec_driver_sql("TRUNCATE tagging_events, api_keys")


@pytest.fixture
def db(db_url: str) -> Iterator[str]:
    """The API database for tests that write products and tags; those rows (and any model version
    registered, and the live audit's switches that decisions wrote) are removed afterwards."""
    yield db_url
    with get_engine(db_url).begin() as connection:
        connection.exec_driver_sql("TRUNCATE products, product_tags, model_versions, auto_switches")


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    with flushed(REDIS_URL) as client:
        yield client


@pytest.fixture
def app_settings(db_url: str, broker: redis.Redis) -> Settings:
    return Settings(database_url=db_url, broker_url=REDIS_URL, tagging_queue=QUEUE)


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings, LIMITS)) as test_client:
        yield test_client


@pytest.fixture
def dead_broker_client(db_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=db_url, broker_url=DEAD_BROKER, tagging_queue=QUEUE)
    with TestClient(create_app(settings, LIMITS)) as test_client:
        yield test_client


@pytest.fixture
def tokens(db_url: str) -> dict[str, str]:
    """One fresh key per role: role -> token."""
    out = {}
    with session_scope(db_url) as session:
        for role in ROLES:
            out[role] = create_key(session, f"test-{role}", role)[1]
    return out


def event(n: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"evt-{n}", "product_id": f"sku-{n}", "seller_id": "seller-1",
            "title": f"Product {n}", "occurred_at": "2025-06-01T10:00:00+00:00", **extra}


def queued_event_ids(client: redis.Redis, queue: str = QUEUE) -> list[str]:
    """The event ids carried by every Celery (protocol 2) message on a Redis queue list (each event
    of an envelope), in queue order."""
    from shared.tasks import events_of

    ids = []
    for raw in client.lrange(queue, 0, -1):
        _args, kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
        ids.extend(e["event_id"] for e in events_of(kwargs))
    return ids
