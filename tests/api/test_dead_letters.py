"""The admin API for dead letters: list by filter without payloads, show one, replay through the normal
path (published on a real Redis, the row 'received' and enqueued) once, never an event already tagged."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from fastapi.testclient import TestClient

from shared.db.models import DeadLetter, TaggingEvent
from shared.db.session import get_engine, session_scope
from shared.db.tags import TaggingResult, apply_batch
from tests.api.conftest import queued_event_ids
from tests.shared.db.dead_letter_data import add_dead_letter, dead_event

URL = "/v1/dead-letters"


@pytest.fixture
def dead(db_url: str) -> Iterator[str]:
    """The API database; dead letters and products removed afterwards (db_url empties the events)."""
    yield db_url
    with get_engine(db_url).begin() as connection:
        connection.exec_driver_sql("TRUNCATE dead_letters, products, product_tags")


def admin(tokens: dict[str, str], role: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


def add(db: str, n: int, **extra: object) -> int:
    reason = str(extra.pop("reason", "OperationalError: database unavailable"))
    with session_scope(db) as session:
        return add_dead_letter(session, dead_event(n, **extra), reason=reason)


def tag(db: str, n: int) -> None:
    with session_scope(db) as session:
        apply_batch(session, [TaggingResult(
            event_id=f"evt-{n}", product_id=f"sku-{n}", seller_id="s1", title="t", description=None,
            image_uri=None, locale=None, occurred_at=datetime(2025, 6, 1, tzinfo=UTC), content_hash="h",
            model_version="v1", tags=[])])


def event_row(db: str, n: int) -> tuple[str, int, datetime | None]:
    with session_scope(db) as session:
        row = session.get(TaggingEvent, f"evt-{n}")
        assert row is not None
        return row.status, row.attempts, row.enqueued_at


def test_list_filters_and_pages_newest_first_without_payloads(
    client: TestClient, tokens: dict[str, str], dead: str,
) -> None:
    a = add(dead, 1)
    b = add(dead, 2, reason="occurred_at: out of range once converted to UTC")
    c = add(dead, 3)
    with session_scope(dead) as session:
        row = session.get(DeadLetter, a)
        assert row is not None
        row.created_at = datetime(2025, 1, 1, tzinfo=UTC)

    def ids(**params: object) -> list[int]:
        response = client.get(URL, params=params, headers=admin(tokens))
        assert response.status_code == 200, response.text
        assert "Secret" not in response.text and "private-bucket" not in response.text
        return [item["id"] for item in response.json()["items"]]

    assert ids() == [c, b, a]
    assert ids(reason="Occurred_At") == [b]
    assert ids(product_id="sku-3") == [c]
    assert ids(event_id="evt-1") == [a]
    assert ids(since="2025-06-01T00:00:00Z") == [c, b]
    assert ids(until="2025-06-01T02:00:00+02:00") == [a]
    assert ids(replayed="true") == []
    first = client.get(URL, params={"limit": 2}, headers=admin(tokens)).json()
    assert [i["id"] for i in first["items"]] == [c, b] and first["next_cursor"]
    params = {"limit": 2, "cursor": first["next_cursor"]}
    second = client.get(URL, params=params, headers=admin(tokens)).json()
    assert [i["id"] for i in second["items"]] == [a] and second["next_cursor"] is None
    item = first["items"][0]
    assert (item["event_id"], item["product_id"], item["event_status"], item["replays"]) == (
        "evt-3", "sku-3", "dead", 0)


def test_show_returns_the_payload_and_whether_it_is_replayable(
    client: TestClient, tokens: dict[str, str], dead: str,
) -> None:
    good, bad = add(dead, 1), add(dead, 2, product_id="a/b")
    shown = client.get(f"{URL}/{good}", headers=admin(tokens)).json()
    assert shown["payload"]["kwargs"]["event"]["title"] == "Secret seller title 1"
    assert shown["replayable"] is True and shown["problems"] == []
    refused = client.get(f"{URL}/{bad}", headers=admin(tokens)).json()
    assert refused["replayable"] is False and refused["problems"][0].startswith("product_id: must not")
    assert client.get(f"{URL}/999999", headers=admin(tokens)).status_code == 404
    assert client.get(f"{URL}/{2**40}", headers=admin(tokens)).status_code == 422
    for path in ("1%00", "abc", "replay"):  # not an id: no such resource (replay: only POST)
        assert client.get(f"{URL}/{path}", headers=admin(tokens)).status_code in (404, 405), path


def test_replay_publishes_once_and_the_event_is_received_again(
    client: TestClient, tokens: dict[str, str], dead: str, broker: redis.Redis,
) -> None:
    dl_id = add(dead, 1)
    response = client.post(f"{URL}/replay", json={"ids": [dl_id]}, headers=admin(tokens))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["replayed"], body["skipped"], body["queued"]) == (1, 0, True)
    assert body["outcomes"] == [{"id": dl_id, "event_id": "evt-1", "action": "replayed", "skipped": None,
                                 "errors": []}]
    assert queued_event_ids(broker) == ["evt-1"]
    status, attempts, enqueued_at = event_row(dead, 1)
    assert (status, attempts) == ("received", 0) and enqueued_at is not None

    again = client.post(f"{URL}/replay", json={"ids": [dl_id]}, headers=admin(tokens)).json()
    assert again["outcomes"][0]["skipped"] == "already_replayed" and again["replayed"] == 0
    assert queued_event_ids(broker) == ["evt-1"]  # sent once
    listed = client.get(URL, headers=admin(tokens)).json()["items"][0]
    assert listed["replays"] == 1 and listed["replayed_at"] and listed["event_status"] == "received"
    forced = client.post(f"{URL}/replay", json={"ids": [dl_id], "force": True}, headers=admin(tokens)).json()
    assert forced["replayed"] == 1 and len(queued_event_ids(broker)) == 2


def test_replay_skips_tagged_and_unreplayable_ones_saying_why(
    client: TestClient, tokens: dict[str, str], dead: str, broker: redis.Redis,
) -> None:
    tagged, broken = add(dead, 1), add(dead, 2, product_id="a/b")
    tag(dead, 1)
    body = client.post(f"{URL}/replay", json={"ids": [tagged, broken, 424242]}, headers=admin(tokens)).json()
    outcomes = {o["id"]: o for o in body["outcomes"]}
    assert outcomes[tagged]["skipped"] == "already_tagged"
    assert outcomes[broken]["skipped"] == "not_replayable"
    assert outcomes[broken]["errors"][0].startswith("product_id: must not contain '/'")
    assert outcomes[424242]["skipped"] == "not_found"
    assert body["replayed"] == 0 and queued_event_ids(broker) == []
    assert event_row(dead, 1)[0] == "tagged"


def test_replay_by_filter_in_parts_and_dry_run(
    client: TestClient, tokens: dict[str, str], dead: str, broker: redis.Redis,
) -> None:
    ids = [add(dead, n) for n in range(1, 4)]
    add(dead, 4, reason="ImageError: unreadable")
    dry = client.post(f"{URL}/replay", json={"filter": {"reason": "operational"}, "dry_run": True},
                      headers=admin(tokens)).json()
    assert [o["action"] for o in dry["outcomes"]] == ["would_replay"] * 3 and dry["dry_run"]
    assert queued_event_ids(broker) == [] and event_row(dead, 1)[0] == "dead"
    part = client.post(f"{URL}/replay", json={"filter": {"reason": "operational"}, "limit": 2},
                       headers=admin(tokens)).json()
    assert [o["id"] for o in part["outcomes"]] == ids[:2] and part["next_after_id"] == ids[1]
    more = {"filter": {"reason": "operational"}, "limit": 2, "after_id": part["next_after_id"]}
    rest = client.post(f"{URL}/replay", json=more, headers=admin(tokens)).json()
    assert [o["id"] for o in rest["outcomes"]] == ids[2:] and rest["next_after_id"] is None
    assert sorted(queued_event_ids(broker)) == ["evt-1", "evt-2", "evt-3"]


@pytest.mark.parametrize("body", [{}, {"ids": [1], "filter": {}}, {"ids": []}, {"ids": [0]},
                                  {"filter": {"product_id": "a\x00"}}, {"ids": [1], "nope": 1}])
def test_a_replay_body_that_says_nothing_clear_is_422(
    client: TestClient, tokens: dict[str, str], dead: str, body: dict[str, object],
) -> None:
    assert client.post(f"{URL}/replay", json=body, headers=admin(tokens)).status_code == 422


def test_a_body_nested_too_deep_is_400(client: TestClient, tokens: dict[str, str], dead: str) -> None:
    response = client.post(f"{URL}/replay", content=b"[" * 100 + b"]" * 100,
                           headers={**admin(tokens), "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["parameter"] == "body"


@pytest.mark.parametrize("role", ["reviewer", "reader", "producer"])
def test_only_admins_may_use_dead_letters(
    client: TestClient, tokens: dict[str, str], dead: str, broker: redis.Redis, role: str,
) -> None:
    dl_id = add(dead, 1)
    for method, path, body in (("GET", URL, None), ("GET", f"{URL}/{dl_id}", None),
                               ("POST", f"{URL}/replay", {"ids": [dl_id]})):
        response = client.request(method, path, json=body, headers=admin(tokens, role))
        assert response.status_code == 403, (method, path, response.text)
        assert client.request(method, path, json=body).status_code == 401
    assert queued_event_ids(broker) == []


@pytest.mark.parametrize(("path", "name"), [
    ("?reason=%00", "reason"), ("?product_id=a%00b", "product_id"), ("?event_id=e%01", "event_id"),
    ("?cursor=%00", "cursor"),
])
def test_control_characters_in_parameters_are_422_not_500(
    client: TestClient, tokens: dict[str, str], dead: str, path: str, name: str,
) -> None:
    response = client.get(f"{URL}{path}", headers=admin(tokens))
    assert response.status_code == 422, response.text
    assert response.json()["parameter"] == name


@pytest.mark.parametrize("params", [{"since": "9999-12-31T23:59:59-14:00"},
                                    {"until": "0001-01-01T00:00:00+01:00"}, {"since": "2025-13-01T00:00:00Z"},
                                    {"since": "0.5"}, {"until": "2025-06-01T00:00:00"}])
def test_times_that_overflow_in_utc_are_422(
    client: TestClient, tokens: dict[str, str], dead: str, params: dict[str, str],
) -> None:
    response = client.get(URL, params=params, headers=admin(tokens))
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("after", ["x", 0, 2**40, True, "a\x00"])
def test_foreign_cursors_are_400(
    client: TestClient, tokens: dict[str, str], dead: str, after: object,
) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")
    assert client.get(URL, params={"cursor": cursor}, headers=admin(tokens)).status_code == 400
