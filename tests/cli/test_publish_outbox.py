"""``tagger publish`` through the outbox: on by default when a database is configured, ``--no-outbox``
to send straight to the broker (not covered against a worker crash between pop and ack)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from shared.config import get_settings
from shared.db.session import get_engine
from tests.api.conftest import queued_event_ids
from tests.cli.test_publish import run_cli, write_jsonl
from tests.private_redis import flushed
from tests.shared.test_outbox import DEAD_DB
from tests.shared.test_publish import DEAD_URL, QUEUE, REDIS_URL, event


@pytest.fixture
def queue() -> Iterator[redis.Redis]:
    with flushed(REDIS_URL) as client:
        yield client


@pytest.fixture
def database(db_url: str) -> str:
    """A migrated Postgres database (tests/api/conftest.py), its events emptied after each test."""
    return db_url


def rows(url: str) -> dict[str, dict[str, Any]]:
    with get_engine(url).connect() as connection:
        return {r.event_id: dict(r._mapping) for r in connection.execute(sa.text(
            "SELECT event_id, status, enqueued_at FROM tagging_events"))}


def test_database_url_records_every_event_before_sending(queue: redis.Redis, database: str,
                                                         tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event(1), event(2, colour="red"), event(3)])
    result = run_cli(str(path), "--broker", REDIS_URL, "--database-url", database)
    assert result.exit_code == 1, result.output
    assert "2 published, 1 rejected" in result.stdout
    assert "without the outbox" not in result.output
    got = rows(database)
    assert set(got) == {"evt-1", "evt-3"}
    assert all(r["status"] == "received" and r["enqueued_at"] is not None for r in got.values())
    assert sorted(queued_event_ids(queue)) == ["evt-1", "evt-3"]


def test_a_configured_database_turns_the_outbox_on_and_no_outbox_turns_it_off(
    queue: redis.Redis, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAGGER_DATABASE_URL", database)
    get_settings.cache_clear()
    try:
        path = write_jsonl(tmp_path / "events.jsonl", [event(1)])
        assert run_cli(str(path), "--broker", REDIS_URL).exit_code == 0
        assert set(rows(database)) == {"evt-1"}

        path = write_jsonl(tmp_path / "more.jsonl", [event(2)])
        result = run_cli(str(path), "--broker", REDIS_URL, "--no-outbox")
        assert result.exit_code == 0, result.output
        assert "not covered against a worker crash between pop and ack" in " ".join(result.stderr.split())
        assert set(rows(database)) == {"evt-1"}  # evt-2 went straight to the broker
        assert sorted(queued_event_ids(queue)) == ["evt-1", "evt-2"]
    finally:
        monkeypatch.delenv("TAGGER_DATABASE_URL")
        get_settings.cache_clear()


def test_without_a_database_it_says_what_is_not_covered(queue: redis.Redis, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event(1)])
    result = run_cli(str(path), "--broker", REDIS_URL)
    assert result.exit_code == 0, result.output
    assert "sent without the outbox" in " ".join(result.stderr.split())
    assert queued_event_ids(queue) == ["evt-1"]


def test_rerun_sends_only_what_is_still_received(queue: redis.Redis, database: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event(1), event(2)])
    assert run_cli(str(path), "--broker", REDIS_URL, "--database-url", database).exit_code == 0
    with get_engine(database).begin() as connection:
        connection.execute(sa.text("UPDATE tagging_events SET status = 'tagged' WHERE event_id = 'evt-1'"))
    queue.delete(QUEUE)
    result = run_cli(str(path), "--broker", REDIS_URL, "--database-url", database)
    assert result.exit_code == 0, result.output
    assert "1 of them already known to the outbox" in " ".join(result.stdout.split())
    assert queued_event_ids(queue) == ["evt-2"]


def test_database_down_exits_two_and_sends_nothing(queue: redis.Redis, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event(1)])
    result = run_cli(str(path), "--broker", REDIS_URL, "--database-url", DEAD_DB)
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert "cannot record 1 events in the outbox" in message and "nothing was sent" in message
    assert "Traceback" not in result.output
    assert queued_event_ids(queue) == []


def test_broker_down_checks_first_and_records_nothing(queue: redis.Redis, database: str,
                                                      tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event(1)])
    result = run_cli(str(path), "--broker", DEAD_URL, "--database-url", database)
    assert result.exit_code == 2, result.output
    assert "TAGGER_BROKER_URL" in " ".join(result.stderr.split())
    assert rows(database) == {}
