"""The live audit end to end on the real stack: a real worker process (the shipped model, every auto tag
audited) and the real API app on one Postgres database and one Redis. Auto tags are sampled for audit
-> a reviewer rejects one through the API -> its value stops being auto-applied for new events (they
get it as review/paused) -> reviewers confirm paused tags -> it is auto-applied again. No restart."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shared.apikeys import create_key
from shared.config import DEFAULT_MODEL_DIR, Settings
from shared.db.session import session_scope
from shared.publish import Publisher
from tests.api.conftest import LIMITS
from tests.workers.db import Db
from tests.workers.procs import RedisServer, Worker
from tests.workers.stack import event
from workers.audit import SwitchWatcher

POLL_S = 0.3  # the worker re-reads the switches at most this often
TITLE = "Puma Men Black Running Shoes"  # the shipped model applies gender=Men (.999) among others


@dataclass
class AuditStack:
    db: Db
    worker: Worker
    publisher: Publisher
    api: TestClient
    keys: dict[str, dict[str, str]]  # role -> auth header

    def tag(self, title: str = TITLE) -> str:
        """Publish one upload, wait until the worker has written it; its product id."""
        ev = event(f"p-{uuid.uuid4().hex[:10]}", title=title)
        self.publisher.publish([ev])
        self.db.wait_events([ev["event_id"]], timeout=60, statuses=("tagged",))
        return str(ev["product_id"])

    def tags(self, product_id: str) -> dict[tuple[str, str], tuple[str, str | None]]:
        """(axis, value) -> (status, reason) of the product's model rows."""
        rows = self.db.rows("SELECT axis, value, status, reason FROM product_tags "
                            "WHERE product_id = :p AND source = 'model'", p=product_id)
        return {(r["axis"], r["value"]): (r["status"], r["reason"]) for r in rows}

    def decide(self, product_id: str, axis: str, action: str, value: str) -> None:
        response = self.api.post(f"/v1/products/{product_id}/decisions", headers=self.keys["reviewer"],
                                 json={"decisions": [{"axis": axis, "action": action, "value": value}]})
        assert response.status_code == 200, response.text

    def switch(self, axis: str, value: str) -> dict[str, Any]:
        items = self.api.get("/v1/audit", params={"axis": axis}, headers=self.keys["reader"]).json()["items"]
        return next(i for i in items if i["value"] == value)

    def settle(self) -> None:
        """Let the worker's next batch re-read the switches (it polls at most every POLL_S)."""
        time.sleep(POLL_S + 0.2)


@pytest.fixture(scope="module")
def audit_stack(make_redis: Callable[..., RedisServer], make_db: Callable[..., str],
                start_worker: Callable[..., Worker], settings: Settings) -> Iterator[AuditStack]:
    redis, url = make_redis(), make_db()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAGGER_", "AWS_"))}
    env.update(  # what tests/workers/conftest.py's worker_env sets, with the shipped model (no training)
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", TAGGER_BROKER_URL=redis.url,
        TAGGER_DATABASE_URL=url, TAGGER_MODEL_DIR=str(DEFAULT_MODEL_DIR),
        TAGGER_CACHE_DIR=str(settings.cache_dir), TAGGER_DEVICE="cpu", TAGGER_BATCH_SIZE="4",
        TAGGER_FLUSH_INTERVAL_S="0.1", TAGGER_AUDIT_RATE="1", TAGGER_AUDIT_POLL_S=str(POLL_S),
    )
    worker = start_worker("audit", env)
    with session_scope(url) as session:
        keys = {role: {"X-API-Key": create_key(session, f"audit-{role}", role)[1]}
                for role in ("reviewer", "reader")}
    app = create_app(Settings(database_url=url, broker_url=redis.url, target_precision=0.98,
                              audit_window=500), LIMITS)
    db = Db(url)
    with Publisher(redis.url) as publisher, TestClient(app) as api:
        yield AuditStack(db, worker, publisher, api, keys)
    worker.stop()
    db.close()


def test_a_value_reviewed_wrong_stops_auto_applying_and_resumes_when_reviewed_right(
    audit_stack: AuditStack, caplog: pytest.LogCaptureFixture,
) -> None:
    s = audit_stack
    caplog.set_level(logging.INFO, "tagger.audit")

    # 1. Every auto tag is sampled (rate 1): still applied, marked audit, listed first for review.
    first = s.tag()
    tags = s.tags(first)
    applied = sorted(k for k, (status, _) in tags.items() if status == "auto")
    assert ("gender", "Men") in applied, tags
    assert all(tags[k] == ("auto", "audit") for k in applied)
    # Nothing is paused yet; review rows carry only the model's own reasons (e.g. one_input: no photo).
    assert not any(reason in ("paused", "audit") for status, reason in tags.values() if status == "review")
    queue = s.api.get("/v1/review", headers=s.keys["reviewer"]).json()["items"]
    gender = next(i for i in queue if (i["product_id"], i["axis"]) == (first, "gender"))
    assert gender["audit"] and (gender["candidates"][0]["value"], gender["candidates"][0]["reason"]) == (
        "Men", "audit")

    # 2. A reviewer rejects the audited gender=Men: one miss first is evidence, the value goes off.
    s.decide(first, "gender", "reject", "Men")
    switch = s.switch("gender", "Men")
    assert (switch["enabled"], switch["n"], switch["hits"]) == (False, 1, 0)
    assert 'auto_switched_off axis="gender" value="Men"' in caplog.text
    s.settle()

    # 3. New uploads: gender=Men is no longer applied (review, paused); the other values still are.
    paused = [s.tag(), s.tag()]
    for product_id in paused:
        tags = s.tags(product_id)
        assert tags[("gender", "Men")] == ("review", "paused"), tags
        assert all(tags[k] == ("auto", "audit") for k in applied if k != ("gender", "Men")), tags
    assert "auto_switches_read off=gender=Men" in s.worker.log()
    queue = s.api.get("/v1/review", params={"axis": "gender"}, headers=s.keys["reviewer"]).json()["items"]
    assert {i["product_id"] for i in queue if i["audit"]} == set(paused)

    # 4. Reviewers confirm the paused tags: after 2 of 3 right the value is no longer shown under .98.
    s.decide(paused[0], "gender", "confirm", "Men")
    assert not s.switch("gender", "Men")["enabled"]  # 1 of 2: upper bound .975, still under
    s.decide(paused[1], "gender", "confirm", "Men")
    switch = s.switch("gender", "Men")
    assert (switch["enabled"], switch["n"], switch["hits"]) == (True, 3, 2)
    assert 'auto_switched_on axis="gender" value="Men" n=3 hits=2' in caplog.text
    s.settle()

    # 5. New uploads get gender=Men applied again, without a worker restart.
    resumed = s.tag()
    assert s.tags(resumed)[("gender", "Men")] == ("auto", "audit")
    assert s.worker.starts == 1 and s.worker.alive()


def test_watcher_polls_at_most_every_interval_and_keeps_the_last_set_on_errors(
    make_db: Callable[..., str],
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    url = make_db()
    engine = create_engine(url, poolclass=NullPool)

    def execute(sql: str) -> None:
        with engine.begin() as connection:
            connection.execute(text(sql))

    execute("INSERT INTO auto_switches (axis, value, enabled, n, hits, lower, upper, target, reason, "
            "updated_at) VALUES ('colour', 'Red', false, 1, 0, 0, 0.95, 0.98, 'x', now())")
    watcher = SwitchWatcher(url, interval_s=3600)
    assert watcher.poll() == {("colour", "Red")}
    execute("UPDATE auto_switches SET enabled = true")
    assert watcher.poll() == {("colour", "Red")}  # within the interval: no query, the last set
    watcher.interval_s = 0
    assert watcher.poll() == frozenset()
    execute("UPDATE auto_switches SET enabled = false")
    execute("ALTER TABLE auto_switches RENAME TO auto_switches_gone")  # the read now fails
    try:
        assert watcher.poll() == frozenset()  # kept, not raised
    finally:
        execute("ALTER TABLE auto_switches_gone RENAME TO auto_switches")
    assert watcher.poll() == {("colour", "Red")}
    engine.dispose()
