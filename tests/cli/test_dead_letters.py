"""``tagger dead-letters list | show | replay`` against a real Postgres and a private Redis: filters, no
payload in the list, replay once through the queue, clear errors (exit 2 naming the option)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
import typer
from typer.testing import CliRunner

from cli.dead_letters import register
from shared.config import get_settings
from shared.db.models import TaggingEvent
from shared.db.session import get_engine, session_scope
from tests.api.conftest import queued_event_ids
from tests.cli.root import root_with
from tests.private_redis import flushed, private_redis_url
from tests.shared.db.dead_letter_data import add_dead_letter, dead_event

runner = CliRunner()


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    with flushed(private_redis_url()) as client:
        yield client


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, db_url: str, broker: redis.Redis) -> Iterator[typer.Typer]:
    monkeypatch.setenv("TAGGER_DATABASE_URL", db_url)
    monkeypatch.setenv("TAGGER_BROKER_URL", private_redis_url())
    monkeypatch.setenv("COLUMNS", "80")
    get_settings.cache_clear()
    yield root_with(register)
    get_settings.cache_clear()
    with get_engine(db_url).begin() as connection:
        connection.exec_driver_sql("TRUNCATE dead_letters")


def add(db: str, n: int, **extra: object) -> int:
    reason = str(extra.pop("reason", "OperationalError: database unavailable"))
    with session_scope(db) as session:
        return add_dead_letter(session, dead_event(n, **extra), reason=reason)


def test_list_is_readable_at_80_columns_filters_and_never_shows_payloads(
    app: typer.Typer, db_url: str,
) -> None:
    ids = [add(db_url, 1), add(db_url, 2, reason="occurred_at: out of range once converted to UTC")]
    listed = runner.invoke(app, ["dead-letters", "list"])
    assert listed.exit_code == 0, listed.output
    assert all(len(line) <= 80 for line in listed.output.splitlines()), listed.output
    assert "evt-1" in listed.output and "evt-2" in listed.output and "Secret" not in listed.output
    found = runner.invoke(app, ["dead-letters", "list", "--reason", "occurred", "--json"])
    as_json = json.loads(found.output)
    assert [i["id"] for i in as_json["items"]] == [ids[1]] and as_json["next_before"] is None
    assert "Secret" not in json.dumps(as_json)
    page = json.loads(runner.invoke(app, ["dead-letters", "list", "--limit", "1", "--json"]).output)
    assert [i["id"] for i in page["items"]] == [ids[1]] and page["next_before"] == ids[1]
    assert json.loads(runner.invoke(app, ["dead-letters", "list", "--product", "sku-1", "--since", "1d",
                                          "--json"]).output)["items"][0]["id"] == ids[0]


def test_show_prints_the_payload_and_problems(app: typer.Typer, db_url: str) -> None:
    good, bad = add(db_url, 1), add(db_url, 2, product_id="a/b")
    shown = runner.invoke(app, ["dead-letters", "show", str(good)])
    assert shown.exit_code == 0 and "replayable: True" in shown.output
    assert "Secret seller title 1" in shown.output
    doc = json.loads(runner.invoke(app, ["dead-letters", "show", str(bad), "--json"]).output)
    assert doc["replayable"] is False and doc["problems"][0].startswith("product_id: must not contain '/'")
    missing = runner.invoke(app, ["dead-letters", "show", "999999"])
    assert missing.exit_code == 2 and "no dead letter 999999" in missing.output


def test_replay_sends_once_and_the_event_is_received_again(
    app: typer.Typer, db_url: str, broker: redis.Redis,
) -> None:
    dl_id = add(db_url, 1)
    dry = runner.invoke(app, ["dead-letters", "replay", str(dl_id), "--dry-run"])
    assert dry.exit_code == 0 and "would replay 1, skipped 0" in dry.output and queued_event_ids(broker) == []
    first = runner.invoke(app, ["dead-letters", "replay", str(dl_id)])
    assert first.exit_code == 0, first.output
    assert "replayed 1, skipped 0" in first.output
    assert queued_event_ids(broker) == ["evt-1"]
    with session_scope(db_url) as session:
        row = session.get(TaggingEvent, "evt-1")
        assert row is not None and (row.status, row.attempts) == ("received", 0) and row.enqueued_at
    again = runner.invoke(app, ["dead-letters", "replay", str(dl_id), "--json"])
    assert again.exit_code == 0
    assert json.loads(again.output)["skipped"] == [
        {"id": dl_id, "event_id": "evt-1", "reason": "already_replayed", "errors": []}]
    assert queued_event_ids(broker) == ["evt-1"]  # sent once


def test_replay_all_matching_reports_what_it_skipped_and_why(
    app: typer.Typer, db_url: str, broker: redis.Redis,
) -> None:
    add(db_url, 1)
    bad = add(db_url, 2, product_id="a/b")
    add(db_url, 3, reason="ImageError: unreadable")
    result = runner.invoke(app, ["dead-letters", "replay", "--reason", "operational", "--all-matching"])
    assert result.exit_code == 1, result.output  # one was not replayable
    assert "replayed 1, skipped 1 (not_replayable 1)" in result.output
    assert f"{bad} evt-2: not_replayable: product_id: must not contain '/'" in result.output
    assert queued_event_ids(broker) == ["evt-1"]


@pytest.mark.parametrize(("args", "message"), [
    (["replay"], "--all-matching"),
    (["replay", "--reason", "x"], "--all-matching"),
    (["replay", "1", "--all-matching"], "not both"),
    (["replay", "0"], "IDS"),
    (["list", "--since", "yesterday"], "--since"),
    (["replay", "--until", "2026-13-01", "--all-matching"], "--until"),
    (["list", "--limit", "0"], "--limit"),
    (["show", "x"], "ID"),
])
def test_bad_arguments_exit_2_naming_the_option(app: typer.Typer, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["dead-letters", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_an_unreachable_broker_fails_before_anything_changes(
    app: typer.Typer, db_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    dl_id = add(db_url, 1)
    monkeypatch.setenv("TAGGER_BROKER_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    result = runner.invoke(app, ["dead-letters", "replay", str(dl_id)])
    assert result.exit_code == 2 and "cannot reach the broker" in result.output
    with session_scope(db_url) as session:
        row = session.get(TaggingEvent, "evt-1")
        assert row is not None and row.status == "dead"
