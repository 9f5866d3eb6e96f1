"""Read routes: a product's tags, products by tag (filters, keyset pages, bad input), the taxonomy."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shared.config import DEFAULT_MODEL_DIR, Settings
from shared.db.session import session_scope
from shared.db.tags import TaggingResult, apply_batch, record_human_decision
from shared.registry import register
from shared.storage import LocalStore
from tests.api.conftest import LIMITS, REDIS_URL

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NAVY_EVIDENCE = {"shares": {"title": 0.3, "photo": 0.7}, "title_only": {"value": "Blue", "score": 0.81},
                 "photo_only": {"value": "Navy", "score": 0.93}}
DEFAULT_MANIFEST = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())


def auth(tokens: dict[str, str], role: str = "reader") -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


def result(product_id: str, tags: tuple[tuple[Any, ...], ...], **changes: Any) -> TaggingResult:
    base = TaggingResult(
        event_id=f"e-{product_id}", product_id=product_id, seller_id="s1", title=f"Product {product_id}",
        description=None, image_uri=None, locale="en-GB", occurred_at=T0, content_hash=f"h-{product_id}",
        model_version="v1", tags=tags,
    )
    return replace(base, **changes)


@pytest.fixture
def catalogue(db: str) -> None:
    """p1: navy (auto) + shoes (review, confirmed by a person); p2..p7: colour=Black with various
    statuses and scores; p8: Black rejected by a person."""
    with session_scope(db) as session:
        apply_batch(session, [
            result("p1", (("colour", "Navy", 0.97, "auto", None, NAVY_EVIDENCE),
                          ("type", "Shoes", 0.62, "review"),
                          ("type", "Boots", 0.30, "review"), ("colour", "Blue", 0.40, "review"))),
            *[result(f"p{n}", (("colour", "Black", score, status),), model_version="v2")
              for n, score, status in [(2, 0.99, "auto"), (3, 0.45, "review"), (4, 0.98, "auto"),
                                       (5, 0.97, "auto"), (6, 0.96, "auto"), (7, 0.95, "auto")]],
            result("p8", (("colour", "Black", 0.90, "auto"),)),
        ])
        record_human_decision(session, "p1", "type", "Shoes", "confirmed")
        record_human_decision(session, "p3", "colour", "Black", "confirmed", score=1.0)
        record_human_decision(session, "p8", "colour", "Black", "rejected")


# --- GET /v1/products/{id}/tags ----------------------------------------------------------------------


def test_product_tags_shape_and_order(client: TestClient, tokens: dict[str, str], catalogue: None) -> None:
    response = client.get("/v1/products/p1/tags", headers=auth(tokens))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["product_id"] == "p1" and body["model_version"] == "v1"
    assert [(t["axis"], t["value"], t["score"], t["status"], t["source"]) for t in body["tags"]] == [
        ("colour", "Navy", 0.97, "auto", "model"),
        ("colour", "Blue", 0.40, "review", "model"),
        # A person confirmed the model's proposal: same row, now human, the model's score kept.
        ("type", "Shoes", 0.62, "confirmed", "human"),
        ("type", "Boots", 0.30, "review", "model"),
    ]
    tag = body["tags"][0]
    assert set(tag) == {"axis", "value", "score", "status", "source", "model_version", "reason",
                        "evidence", "updated_at"}
    assert tag["model_version"] == "v1" and tag["reason"] is None
    assert tag["evidence"] == NAVY_EVIDENCE  # stored with the tag, returned as written
    assert body["tags"][1]["evidence"] is None  # a tag written without any
    assert (body["novelty"], body["novelty_reason"]) == (None, None)  # this catalogue was written without
    datetime.fromisoformat(tag["updated_at"])


def test_product_tags_unknown_product_is_404(client: TestClient, tokens: dict[str, str], db: str) -> None:
    response = client.get("/v1/products/nope/tags", headers=auth(tokens))
    assert response.status_code == 404
    assert "product 'nope' not found" in response.json()["detail"]


# --- GET /v1/tags/{axis}/{value}/products -------------------------------------------------------------


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["product_id"] for item in response.json()["items"]]


def test_products_by_tag_defaults_to_applied_tags(
    client: TestClient, tokens: dict[str, str], catalogue: None
) -> None:
    response = client.get("/v1/tags/colour/Black/products", headers=auth(tokens))
    # auto and confirmed; p3 was confirmed by a person, p8 rejected: human rows win.
    assert _ids(response) == ["p2", "p3", "p4", "p5", "p6", "p7"]
    body = response.json()
    assert body["next_cursor"] is None
    first = body["items"][0]
    assert set(first) == {"product_id", "score", "status", "model_version", "updated_at"}
    assert (first["score"], first["status"], first["model_version"]) == (0.99, "auto", "v2")


def test_products_by_tag_filters_status_and_min_score(
    client: TestClient, tokens: dict[str, str], catalogue: None
) -> None:
    get = client.get
    url = "/v1/tags/colour/Black/products"
    assert _ids(get(url, params={"status": "rejected"}, headers=auth(tokens))) == ["p8"]
    assert _ids(get(url, params={"status": ["confirmed", "rejected"]}, headers=auth(tokens))) == ["p3", "p8"]
    assert _ids(get(url, params={"min_score": 0.97}, headers=auth(tokens))) == ["p2", "p3", "p4", "p5"]
    assert _ids(get(url, params={"status": "auto", "min_score": 0.97}, headers=auth(tokens))) == [
        "p2", "p4", "p5"]
    assert _ids(get("/v1/tags/colour/Purple/products", headers=auth(tokens))) == []


def test_pagination_returns_every_product_once(
    client: TestClient, tokens: dict[str, str], catalogue: None
) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/tags/colour/Black/products", params=params, headers=auth(tokens))
        page = _ids(response)
        assert len(page) <= 2
        seen += page
        pages += 1
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert pages == 3
    assert seen == ["p2", "p3", "p4", "p5", "p6", "p7"]


@pytest.mark.parametrize("cursor", ["not base64!", base64.urlsafe_b64encode(b"p3").decode(),
                                    base64.urlsafe_b64encode(b'{"after": 3}').decode(), "%%%", "\u00e9"])
def test_bad_cursor_is_400_naming_cursor(
    client: TestClient, tokens: dict[str, str], db: str, cursor: str
) -> None:
    response = client.get("/v1/tags/colour/Black/products", params={"cursor": cursor}, headers=auth(tokens))
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == "cursor" and "cursor" in body["detail"]


def test_unknown_status_is_422_naming_it(client: TestClient, tokens: dict[str, str], db: str) -> None:
    response = client.get("/v1/tags/colour/Black/products", params={"status": ["auto", "bogus"]},
                          headers=auth(tokens))
    assert response.status_code == 422
    body = response.json()
    assert body["parameter"] == "status" and "'bogus'" in body["detail"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"min_score": 1.5}])
def test_out_of_range_parameters_are_422(
    client: TestClient, tokens: dict[str, str], db: str, params: dict[str, Any]
) -> None:
    response = client.get("/v1/tags/colour/Black/products", params=params, headers=auth(tokens))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]


# --- GET /v1/taxonomy ---------------------------------------------------------------------------------


def test_taxonomy_from_shipped_model_when_nothing_is_live(
    client: TestClient, tokens: dict[str, str], db: str
) -> None:
    response = client.get("/v1/taxonomy", headers=auth(tokens))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == DEFAULT_MANIFEST["version"]
    assert body["axes"] == {name: {"kind": spec["kind"], "values": spec["values"]}
                            for name, spec in DEFAULT_MANIFEST["axes"].items()}


def test_taxonomy_from_live_registry_version(
    db: str, tokens: dict[str, str], tmp_path: Path, broker: Any
) -> None:
    store = LocalStore(tmp_path / "objects")
    model_dir = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["version"] = "reads-test-v2"
    manifest["axes"]["season"]["values"] = [*manifest["axes"]["season"]["values"], "Monsoon"]
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    settings = Settings(database_url=db, broker_url=REDIS_URL, object_store_url=f"file://{store.root}",
                        cache_dir=tmp_path / "cache")
    with TestClient(create_app(settings, LIMITS)) as client:
        before = client.get("/v1/taxonomy", headers=auth(tokens)).json()
        assert before["model_version"] == DEFAULT_MANIFEST["version"]
        with session_scope(db) as session:
            register(session, store, model_dir, status="live")
        body = client.get("/v1/taxonomy", headers=auth(tokens, "admin")).json()
        assert body["model_version"] == "reads-test-v2"
        assert body["axes"]["season"]["values"][-1] == "Monsoon"
        assert body["axes"]["gender"] == {"kind": "single",
                                          "values": DEFAULT_MANIFEST["axes"]["gender"]["values"]}
        # Cached per version: served again even once the store is gone.
        shutil.rmtree(store.root)
        assert client.get("/v1/taxonomy", headers=auth(tokens)).json() == body


def test_taxonomy_of_a_manifest_the_schema_refuses_is_500_naming_the_key(
    db: str, tokens: dict[str, str], tmp_path: Path, broker: Any
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    del manifest["axes"]["season"]["kind"]
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    settings = Settings(database_url=db, broker_url=REDIS_URL, model_dir=model_dir,
                        cache_dir=tmp_path / "cache")
    with TestClient(create_app(settings, LIMITS)) as client:
        response = client.get("/v1/taxonomy", headers=auth(tokens))
    assert response.status_code == 500
    assert response.json()["detail"] == (
        f"default model {model_dir / 'manifest.json'}: missing key 'axes.season.kind'")


# --- auth ---------------------------------------------------------------------------------------------

READ_ROUTES = ["/v1/products/p1/tags", "/v1/tags/colour/Black/products", "/v1/taxonomy"]


@pytest.mark.parametrize("path", READ_ROUTES)
def test_read_routes_need_a_key(client: TestClient, db: str, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("path", READ_ROUTES)
def test_producer_may_not_read(client: TestClient, tokens: dict[str, str], db: str, path: str) -> None:
    response = client.get(path, headers=auth(tokens, "producer"))
    assert response.status_code == 403
    assert "reader" in response.json()["detail"]
