"""Publishing to the real Redis broker: one Celery message per event, JSON only, no torch, and the CLI."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.connection
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from shared.events import TAG_TASK, ProductUploaded
from shared.publish import BrokerUnavailable, Publisher, PublisherConfigError
from shared.publish_commands import register
from tests.private_redis import flushed, private_redis_url

REDIS_URL = private_redis_url()  # a redis-server of this test run's own
DEAD_URL = "redis://:s3cret@127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once
QUEUE = "tagging"
ROOT = Path(__file__).resolve().parents[2]


def event(n: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"evt-{n}", "product_id": f"sku-{n}", "seller_id": "seller-1",
            "title": f"Product {n}", "occurred_at": "2025-06-01T10:00:00+00:00", **extra}


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    with flushed(REDIS_URL) as client:
        yield client


def queued(client: redis.Redis, queue: str = QUEUE) -> list[dict[str, Any]]:
    """Decode every Celery (protocol 2) message on a Redis queue list into headers + kwargs."""
    messages = []
    for raw in client.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        assert envelope["content-type"] == "application/json"
        assert envelope["properties"]["body_encoding"] == "base64"
        args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        assert args == []
        messages.append({"headers": envelope["headers"], "kwargs": kwargs})
    return messages


def queued_event_ids(client: redis.Redis) -> set[str]:
    return {m["kwargs"]["event"]["event_id"] for m in queued(client)}


def test_one_message_per_event_whose_body_is_the_event(broker: redis.Redis) -> None:
    events = [ProductUploaded.model_validate(event(1, image_uri="s3://b/k.jpg")), event(2), event(3)]
    with Publisher(REDIS_URL, QUEUE) as publisher:
        ids = publisher.publish(events)
    assert len(ids) == len(set(ids)) == 3
    messages = queued(broker)
    assert len(messages) == 3
    assert {m["headers"]["task"] for m in messages} == {TAG_TASK}
    assert {m["headers"]["id"] for m in messages} == set(ids)
    by_id = {m["kwargs"]["event"]["event_id"]: m["kwargs"] for m in messages}
    for raw in events:
        model = ProductUploaded.model_validate(raw)
        assert by_id[model.event_id] == {"event": model.model_dump(mode="json")}
        assert ProductUploaded.model_validate(by_id[model.event_id]["event"]) == model


def test_an_invalid_dict_stops_the_batch_before_anything_is_sent(broker: redis.Redis) -> None:
    with Publisher(REDIS_URL, QUEUE) as publisher, pytest.raises(ValidationError):
        publisher.publish([event(1), event(2, colour="red")])
    assert broker.llen(QUEUE) == 0


def test_a_batch_reuses_one_pooled_connection(broker: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    sockets = []
    real_connect = redis.connection.Connection._connect

    def counting_connect(self: redis.connection.Connection) -> Any:
        sockets.append(1)
        return real_connect(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", counting_connect)
    with Publisher(REDIS_URL, QUEUE) as publisher:
        publisher.check()
        publisher.publish([event(n) for n in range(100)])
        publisher.publish([event(n) for n in range(100, 200)])
    assert broker.llen(QUEUE) == 200
    assert len(sockets) <= 3, f"{len(sockets)} sockets opened for 200 messages"


def test_in_memory_broker_is_refused() -> None:
    with pytest.raises(PublisherConfigError, match="TAGGER_BROKER_URL.*memory://"):
        Publisher("memory://")


def test_unreachable_broker_fails_fast_and_names_the_setting() -> None:
    publisher = Publisher(DEAD_URL, QUEUE, connect_timeout_s=2)
    with pytest.raises(BrokerUnavailable, match="TAGGER_BROKER_URL") as info:
        publisher.check()
    assert "s3cret" not in str(info.value)
    with pytest.raises(BrokerUnavailable) as info:
        publisher.publish([event(1)])
    assert info.value.sent == 0 and "s3cret" not in str(info.value)
    publisher.close()


def test_publishing_never_imports_torch(broker: redis.Redis) -> None:
    script = textwrap.dedent(f"""
        import sys
        from shared.publish import Publisher
        with Publisher({REDIS_URL!r}, {QUEUE!r}) as p:
            p.publish([{event(7)!r}])
        heavy = sorted(m for m in ("torch", "torchvision", "transformers", "timm", "shared.ml", "workers")
                       if m in sys.modules)
        assert not heavy, heavy
        print("published without", "torch")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "published without torch" in proc.stdout
    assert queued_event_ids(broker) == {"evt-7"}


# --- tagger publish FILE --------------------------------------------------------------------------

def cli() -> typer.Typer:
    """A root app shaped like ``tagger``: a group, so the command is invoked as ``publish FILE``."""
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Stand-in for the tagger root command."""

    register(app)
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
    events = {m["kwargs"]["event"]["event_id"]: m["kwargs"]["event"] for m in queued(broker)}
    assert set(events) == {"e1", "e2"}
    assert events["e1"]["description"] is None and events["e2"]["image_uri"] is None
    assert events["e2"]["title"] == "Kurta, red"


def test_cli_all_good_exits_zero(broker: redis.Redis, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [event(n) for n in range(5)])
    result = run_cli(str(path), "--broker", REDIS_URL, "--queue", QUEUE)
    assert result.exit_code == 0, result.output
    assert "5 published, 0 rejected" in result.stdout
    assert broker.llen(QUEUE) == 5


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
