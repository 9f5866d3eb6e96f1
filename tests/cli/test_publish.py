"""``tagger publish FILE``: validate a JSONL or CSV file of upload events and send the good ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import typer
from typer.testing import CliRunner

from cli.publish import register
from shared.tasks import events_of
from tests.cli.root import root_with
from tests.private_redis import flushed
from tests.shared.test_publish import DEAD_URL, QUEUE, REDIS_URL, event, queued, queued_event_ids


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    with flushed(REDIS_URL) as client:
        yield client


def cli() -> typer.Typer:
    """A root app shaped like ``tagger``: a group, so the command is invoked as ``publish FILE``."""
    app = root_with(register)
    return app


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli(), ["publish", *args])


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_cli_publishes_good_lines_and_reports_the_bad_one(broker: redis.Redis, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event(1), event(2, colour="red"), "", event(3)])
    result = run_cli(str(path), "--broker", REDIS_URL)
    assert result.exit_code == 1, result.output
    assert "2 published, 1 rejected" in result.stdout
    assert "line 2: colour: unknown field" in result.stdout
    assert queued_event_ids(broker) == {"evt-1", "evt-3"}


def test_cli_reports_every_reason_with_line_numbers(broker: redis.Redis, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.ndjson", [
        event(1, title="x" * 501), "{not json", "[1, 2]", event(4, occurred_at="2025-06-01T10:00:00"),
    ])
    result = run_cli(str(path), "--broker", REDIS_URL)
    assert result.exit_code == 1
    assert "0 published, 4 rejected" in result.stdout
    assert "line 1: title: String should have at most 500 characters" in result.stdout
    assert "line 2: line: not valid JSON" in result.stdout
    assert "line 3: line: expected a JSON object" in result.stdout
    assert "line 4: occurred_at: Input should have timezone info" in result.stdout
    assert broker.llen(QUEUE) == 0


def test_cli_shows_twenty_rejections_then_a_count(broker: redis.Redis, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event(n, bad=1) for n in range(25)] + [event(99)])
    result = run_cli(str(path), "--broker", REDIS_URL)
    assert result.exit_code == 1
    assert "line 20: bad: unknown field" in result.stdout
    assert "line 21:" not in result.stdout
    assert "… 5 more" in result.stdout
    assert queued_event_ids(broker) == {"evt-99"}


def test_cli_reads_csv_with_empty_cells_as_absent(broker: redis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,product_id,seller_id,title,description,image_uri,occurred_at\n"
        "e1,p1,s1,Blue jeans,,s3://catalogue/p1.jpg,2025-06-01T10:00:00Z\n"
        'e2,p2,s1,"Kurta, red",Cotton,,2025-06-01T10:00:00+05:30\n'
        "e3,p3,s1,,,,2025-06-01T10:00:00Z\n"
    )
    result = run_cli(str(path), "--broker", REDIS_URL)
    assert result.exit_code == 1, result.output
    assert "2 published, 1 rejected" in result.stdout
    assert "line 4: title: required field is missing" in result.stdout
    events = {e["event_id"]: e for m in queued(broker) for e in events_of(m["kwargs"])}
    assert set(events) == {"e1", "e2"}
    assert events["e1"]["description"] is None and events["e2"]["image_uri"] is None
    assert events["e2"]["title"] == "Kurta, red"


def test_cli_all_good_exits_zero(broker: redis.Redis, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event(n) for n in range(5)])
    result = run_cli(str(path), "--broker", REDIS_URL, "--queue", QUEUE)
    assert result.exit_code == 0, result.output
    assert "5 published, 0 rejected" in result.stdout
    assert broker.llen(QUEUE) == 1  # one envelope (TAGGER_EVENTS_PER_MESSAGE, default 50)
    assert len(queued_event_ids(broker)) == 5


def test_cli_dry_run_sends_nothing(broker: redis.Redis, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event(1)])
    result = run_cli(str(path), "--dry-run", "--broker", "memory://")
    assert result.exit_code == 0, result.output
    assert "1 accepted (dry run, nothing sent), 0 rejected" in result.stdout
    assert broker.llen(QUEUE) == 0


@pytest.mark.parametrize(("name", "content", "broker_url", "message"), [
    ("missing.jsonl", None, REDIS_URL, "no such file"),
    ("events.xlsx", "x", REDIS_URL, "unknown extension '.xlsx'"),
    ("events.jsonl", json.dumps(event(1)), DEAD_URL, "TAGGER_BROKER_URL"),
    ("events.jsonl", json.dumps(event(1)), "memory://", "TAGGER_BROKER_URL"),
])
def test_cli_unusable_input_exits_two(
    broker: redis.Redis, tmp_path: Path, name: str, content: str | None, broker_url: str, message: str,
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content + "\n")
    result = run_cli(str(path), "--broker", broker_url)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert "s3cret" not in result.output
    assert broker.llen(QUEUE) == 0


# --- issue 11: the same contract as the API ---------------------------------------------------------

def test_cli_deeply_nested_line_exits_two_and_sends_nothing(broker: redis.Redis, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event(1), "[" * 5000 + "]" * 5000, event(3)])
    result = run_cli(str(path), "--broker", REDIS_URL)
    assert result.exit_code == 2, result.output
    assert "line 2: nested deeper than 32 levels" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert broker.llen(QUEUE) == 0


def test_cli_refuses_what_the_api_refuses_line_by_line(broker: redis.Redis, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [
        event(1, occurred_at="9999-12-31T23:59:59-14:00"), event(2, occurred_at="9999-12-31T00:00:00Z"),
        event(3, product_id="a/b"), event(4, product_id="a\x00b"), '{"event_id": ' + "9" * 5000 + "}",
        event(6),
    ])
    result = run_cli(str(path), "--broker", REDIS_URL)
    assert result.exit_code == 1, result.output
    out = " ".join(result.stdout.split())
    assert "1 published, 5 rejected" in out
    assert "line 1: occurred_at: out of range once converted to UTC" in out
    assert "line 2: occurred_at: is more than 300 s in the future" in out
    assert "line 3: product_id: must not contain '/'" in out
    assert "line 4: product_id: contains a NUL character" in out
    assert "line 5: line: a number is out of range" in out
    assert queued_event_ids(broker) == {"evt-6"}
