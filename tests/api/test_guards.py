"""Issue 11: what the API answers for hostile or broken input — a 4xx naming the field, never a 500 —
and that good events sent with bad ones are still accepted. Real app, Postgres and a private Redis."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.paging import encode_cursor
from shared.config import Settings
from shared.db.session import get_engine
from tests.api.conftest import LIMITS, REDIS_URL, event, queued_event_ids
from tests.api.test_images import add_product


def role(tokens: dict[str, str], name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[name]}"}


def recorded(db_url: str) -> set[str]:
    with get_engine(db_url).connect() as connection:
        return set(connection.scalars(sa.text("SELECT event_id FROM tagging_events")))


def raw_post(client: TestClient, path: str, body: str | bytes, headers: dict[str, str]) -> Any:
    return client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})


DEEP = "[" * 2000 + "]" * 2000
BIG_INT = '{"event_id": ' + "9" * 4301 + "}"


# --- JSON bodies ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "reason"), [
    (DEEP, "body: nested deeper than 32 levels"),
    (BIG_INT, "body: a number is out of range"),
    ('{"event_id": 1e999}', "body: a number is out of range"),
    ('{"event_id": NaN}', "body: not valid JSON"),
])
def test_hostile_ingest_bodies_are_400_naming_the_body(
    client: TestClient, tokens: dict[str, str], db_url: str, body: str, reason: str,
) -> None:
    response = raw_post(client, "/v1/events", body, role(tokens, "producer"))
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(reason) and response.json()["parameter"] == "body"
    assert recorded(db_url) == set()


@pytest.mark.parametrize(("body", "reason"), [
    (DEEP, "body: nested deeper than 32 levels"),
    ('{"decisions": [{"axis": ' + "1" * 4301 + "}]}", "body: a number is out of range"),
    ('{"decisions": [{"axis": -1e400}]}', "body: a number is out of range"),
])
def test_hostile_decision_bodies_are_400_naming_the_body(
    client: TestClient, tokens: dict[str, str], db: str, body: str, reason: str,
) -> None:
    add_product(db, "p1", None)
    response = raw_post(client, "/v1/products/p1/decisions", body, role(tokens, "reviewer"))
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(reason)


def test_decision_with_nul_is_422_not_a_database_error(
    client: TestClient, tokens: dict[str, str], db: str,
) -> None:
    add_product(db, "p1", None)
    body = {"decisions": [{"axis": "colour\x00", "action": "confirm", "value": "Red"}]}
    response = client.post("/v1/products/p1/decisions", json=body, headers=role(tokens, "reviewer"))
    assert response.status_code == 422, response.text
    assert "contains a NUL character" in response.text


def test_every_body_has_the_size_limit(client: TestClient, tokens: dict[str, str], db: str) -> None:
    add_product(db, "p1", None)
    padding = "x" * LIMITS.max_body_bytes
    body = json.dumps({"decisions": [{"axis": "colour", "action": "confirm", "value": padding}]})
    response = raw_post(client, "/v1/products/p1/decisions", body, role(tokens, "reviewer"))
    assert response.status_code == 413, response.text
    assert response.json()["limit"] == {"name": "max_body_bytes", "value": LIMITS.max_body_bytes}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield body.encode()

    response = client.post("/v1/products/p1/decisions", content=chunks(),
                           headers={**role(tokens, "reviewer"), "Content-Type": "application/json"})
    assert response.status_code == 413 and "TAGGER_API_MAX_BODY_BYTES" in response.json()["detail"]


# --- events: bad ones refused by field, good ones still accepted ---------------------------------------

@pytest.mark.parametrize(("bad", "reason"), [
    ({"product_id": "a\x00b"}, "product_id: contains a NUL character"),
    ({"event_id": "e\x00"}, "event_id: contains a NUL character"),
    ({"seller_id": "s\x1b[31m"}, "seller_id: contains a control character"),
    ({"product_id": "shoes/red"}, "product_id: must not contain '/'"),
    ({"product_id": ".."}, "product_id: must not be '.' or '..'"),
    ({"occurred_at": "9999-12-31T23:59:59-14:00"}, "occurred_at: out of range once converted to UTC"),
    ({"occurred_at": "9999-12-31T00:00:00Z"}, "occurred_at: is more than 300 s in the future"),
    ({"occurred_at": "1970-01-01T00:00:00Z"}, "occurred_at: is before 2000-01-01"),
])
def test_a_bad_event_fails_alone_and_its_batch_mates_are_queued(
    client: TestClient, tokens: dict[str, str], db_url: str, broker: redis.Redis,
    bad: dict[str, str], reason: str,
) -> None:
    batch = [event(1), {**event(2), **bad}, event(3)]
    response = client.post("/v1/events", json=batch, headers=role(tokens, "producer"))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == ["evt-1", "evt-3"] and body["queued"] is True
    (rejected,) = body["rejected"]
    assert rejected["index"] == 1 and rejected["errors"][0].startswith(reason), rejected
    assert rejected["event_id"] == (None if "event_id" in bad else "evt-2")  # a bad id is not echoed
    assert recorded(db_url) == {"evt-1", "evt-3"}
    assert sorted(queued_event_ids(broker)) == ["evt-1", "evt-3"]


def test_event_bounds_follow_the_apps_settings(
    db_url: str, broker: redis.Redis, tokens: dict[str, str],
) -> None:
    settings = Settings(database_url=db_url, broker_url=REDIS_URL, event_max_skew_s=0,
                        event_earliest="2025-07-01T00:00:00Z")
    with TestClient(create_app(settings, LIMITS)) as strict:
        response = strict.post("/v1/events", json=event(1), headers=role(tokens, "producer"))
    assert response.status_code == 422
    assert response.json()["rejected"][0]["errors"] == [
        "occurred_at: is before 2025-07-01T00:00:00+00:00 (TAGGER_EVENT_EARLIEST)"]


# --- path and query parameters --------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "name"), [
    ("GET", "/v1/products/a%00b/tags", "product_id"),
    ("GET", "/v1/products/a%00b/image", "product_id"),
    ("POST", "/v1/products/a%00b/decisions", "product_id"),
    ("GET", "/v1/tags/colour%00/Red/products", "axis"),
    ("GET", "/v1/tags/colour/Red%01/products", "value"),
    ("GET", "/v1/tags/colour/Red/products?cursor=%00", "cursor"),
    ("GET", "/v1/tags/colour/Red/products?status=auto%00", "status"),
    ("GET", "/v1/review?axis=%00", "axis"),
    ("GET", "/v1/review?cursor=a%0Ab", "cursor"),
])
def test_control_characters_in_parameters_are_422_naming_them(
    client: TestClient, tokens: dict[str, str], db: str, method: str, path: str, name: str,
) -> None:
    body = {"decisions": [{"axis": "colour", "action": "confirm", "value": "Red"}]}
    response = client.request(method, path, headers=role(tokens, "admin"),
                              json=body if method == "POST" else None)
    assert response.status_code == 422, response.text
    assert response.json()["parameter"] == name
    assert response.json()["detail"].startswith(f"{name}: contains a")


@pytest.mark.parametrize("after", ["a\x00", ["0.5", "p\x00", "colour"], [0.5, "p", "c\x00"],
                                   ["audit", "9999-12-31T23:59:59-14:00", "p", "c"], [10**30, "p", "c"]])
def test_cursors_that_decode_to_unusable_keys_are_400(
    client: TestClient, tokens: dict[str, str], db: str, after: Any,
) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")
    for path in ("/v1/tags/colour/Red/products", "/v1/review"):
        response = client.get(path, params={"cursor": cursor}, headers=role(tokens, "admin"))
        assert response.status_code == 400, (path, response.text)
        assert response.json()["parameter"] == "cursor"


def test_a_handed_out_cursor_still_works(client: TestClient, tokens: dict[str, str], db: str) -> None:
    response = client.get("/v1/tags/colour/Red/products", params={"cursor": encode_cursor("sku 1?é")},
                          headers=role(tokens, "admin"))
    assert response.status_code == 200, response.text
    # An offset Postgres would refuse (past 15:59) is moved to UTC, not sent as it is.
    odd = encode_cursor(["audit", "2025-01-01T00:00:00+23:00", "p", "c"])
    response = client.get("/v1/review", params={"cursor": odd}, headers=role(tokens, "admin"))
    assert response.status_code == 200, response.text


# --- the image route -------------------------------------------------------------------------------

def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` with a token pixel stream: a bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def test_the_bomb_header_is_a_real_png() -> None:
    with Image.open(io.BytesIO(png_header(30, 20))) as probe:
        assert probe.format == "PNG" and probe.size == (30, 20)


@pytest.mark.parametrize(("size", "max_pixels"), [((20000, 20000), 40_000_000), ((10000, 10000), 40_000_000),
                                                   ((300, 300), 50_000)])
def test_a_picture_over_the_pixel_limit_is_422_not_500(
    db: str, broker: redis.Redis, tokens: dict[str, str], tmp_path: Path,
    size: tuple[int, int], max_pixels: int,
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(*size))
    add_product(db, "bomb", path.as_uri())
    settings = Settings(database_url=db, broker_url=REDIS_URL, allow_file_uris=True,
                        max_image_pixels=max_pixels)
    with TestClient(create_app(settings, LIMITS)) as client:
        response = client.get("/v1/products/bomb/image", headers=role(tokens, "reviewer"))
    assert response.status_code == 422, response.text
    assert "TAGGER_MAX_IMAGE_PIXELS" in response.json()["detail"]
    assert response.json()["limit"] == {"name": "max_image_pixels", "value": max_pixels}
