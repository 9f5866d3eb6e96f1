"""Review routes: the queue (only undecided review tags, most uncertain first, axis filter, cursor) and
decisions (confirm, correct, axis kinds from the served model, 404, 422 with nothing applied, 401/403)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shared.config import DEFAULT_MODEL_DIR, Settings
from shared.db.models import ProductTag
from shared.db.session import get_engine, session_scope
from shared.db.tags import TaggingResult, apply_batch
from shared.registry import register
from shared.storage import LocalStore
from tests.api.conftest import LIMITS, REDIS_URL

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def auth(tokens: dict[str, str], role: str = "reviewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


# r1's title says Blue, its photo Navy: the model sent the axis to review (reason 'disagreement').
R1_EVIDENCE = {"shares": {"title": 0.55, "photo": 0.45}, "title_only": {"value": "Blue", "score": 0.9},
               "photo_only": {"value": "Navy", "score": 0.88}}


def result(product_id: str, tags: tuple[tuple[Any, ...], ...]) -> TaggingResult:
    return TaggingResult(
        event_id=f"e-{product_id}", product_id=product_id, seller_id="s1", title=f"Product {product_id}",
        description=None, image_uri=f"file:///img/{product_id}.jpg", locale="en-GB", occurred_at=T0,
        content_hash=f"h-{product_id}", model_version="v1", tags=tags,
    )


@pytest.fixture
def catalogue(db: str) -> None:
    """r1 colour best 0.60; r2 colour best 0.45 + type 0.55; r3 type 0.30; a1 only auto tags; s1 a
    sure colour (auto) whose runners-up are review rows scored ~0: not uncertain, not queued."""
    with session_scope(db) as session:
        apply_batch(session, [
            result("r1", (("colour", "Blue", 0.60, "review", "disagreement", R1_EVIDENCE),
                          ("colour", "Navy", 0.35, "review", "disagreement", R1_EVIDENCE),
                          ("colour", "Teal", 0.20, "review"), ("colour", "Grey", 0.10, "review"),
                          ("type", "Shoes", 0.95, "auto"))),
            result("r2", (("colour", "Black", 0.45, "review"), ("colour", "Grey", 0.40, "review"),
                          ("type", "Boots", 0.55, "review"))),
            result("r3", (("type", "Bag", 0.30, "review"),)),
            result("a1", (("colour", "Red", 0.99, "auto"),)),
            result("s1", (("colour", "Green", 0.97, "auto"), ("colour", "Olive", 0.02, "review"),
                          ("colour", "Lime", 0.0, "review"))),
        ])


def queue(client: TestClient, tokens: dict[str, str], **params: Any) -> list[tuple[str, str]]:
    response = client.get("/v1/review", params=params, headers=auth(tokens))
    assert response.status_code == 200, response.text
    return [(item["product_id"], item["axis"]) for item in response.json()["items"]]


def tag_rows(db: str, product_id: str, axis: str) -> dict[str, tuple[str, str]]:
    with session_scope(db) as session:
        rows = session.query(ProductTag).filter_by(product_id=product_id, axis=axis)
        return {t.value: (t.status, t.source) for t in rows}


# --- GET /v1/review ------------------------------------------------------------------------------------


def test_queue_has_only_review_items_most_uncertain_first(
    client: TestClient, tokens: dict[str, str], catalogue: None,
) -> None:
    response = client.get("/v1/review", headers=auth(tokens))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(i["product_id"], i["axis"]) for i in body["items"]] == [
        ("r3", "type"), ("r2", "colour"), ("r2", "type"), ("r1", "colour")]
    assert body["next_cursor"] is None
    r1 = body["items"][-1]
    assert r1 == {"product_id": "r1", "title": "Product r1", "image_uri": "file:///img/r1.jpg",
                  "axis": "colour", "model_version": "v1", "audit": False, "evidence": R1_EVIDENCE,
                  "candidates": [{"value": "Blue", "score": 0.60, "reason": "disagreement"},
                                 {"value": "Navy", "score": 0.35, "reason": "disagreement"},
                                 {"value": "Teal", "score": 0.20, "reason": None}]}


def test_queue_filter_by_axis_and_cursor(client: TestClient, tokens: dict[str, str], catalogue: None) -> None:
    assert queue(client, tokens, axis="colour") == [("r2", "colour"), ("r1", "colour")]
    assert queue(client, tokens, axis="size") == []
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/review", params=params, headers=auth(tokens)).json()
        seen += [(i["product_id"], i["axis"]) for i in body["items"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert seen == queue(client, tokens)


def test_bad_cursor_is_400_naming_cursor(client: TestClient, tokens: dict[str, str], db: str) -> None:
    response = client.get("/v1/review", params={"cursor": "not-a-cursor!"}, headers=auth(tokens))
    assert response.status_code == 400
    assert response.json()["parameter"] == "cursor"


def test_decided_axis_leaves_the_queue(client: TestClient, tokens: dict[str, str], catalogue: None) -> None:
    response = client.post("/v1/products/r2/decisions", headers=auth(tokens),
                           json={"decisions": [{"axis": "colour", "action": "reject", "value": "Black"}]})
    assert response.status_code == 200, response.text
    assert queue(client, tokens) == [("r3", "type"), ("r2", "type"), ("r1", "colour")]


# --- POST /v1/products/{id}/decisions ------------------------------------------------------------------


def test_confirm_stores_human_confirmation(
    client: TestClient, tokens: dict[str, str], db: str, catalogue: None,
) -> None:
    response = client.post("/v1/products/r1/decisions", headers=auth(tokens),
                           json={"decisions": [{"axis": "colour", "action": "confirm", "value": "Blue"}]})
    assert response.status_code == 200, response.text
    assert response.json() == {"product_id": "r1",
                               "changed": [{"axis": "colour", "value": "Blue", "status": "confirmed"}]}
    assert tag_rows(db, "r1", "colour")["Blue"] == ("confirmed", "human")


def test_correct_rejects_old_and_confirms_new(
    client: TestClient, tokens: dict[str, str], db: str, catalogue: None,
) -> None:
    body = {"decisions": [{"axis": "colour", "action": "correct", "value": "Black",
                           "corrected_value": "Navy"}]}
    response = client.post("/v1/products/r2/decisions", headers=auth(tokens), json=body)
    assert response.status_code == 200, response.text
    assert sorted((c["value"], c["status"]) for c in response.json()["changed"]) == [
        ("Black", "rejected"), ("Navy", "confirmed")]
    rows = tag_rows(db, "r2", "colour")
    assert rows["Black"] == ("rejected", "human") and rows["Navy"] == ("confirmed", "human")


@pytest.fixture
def multi_model_client(db: str, tmp_path: Path, broker: Any) -> Iterator[TestClient]:
    """An app whose live registry model has a multi-label axis ``style`` next to the shipped single ones."""
    store = LocalStore(tmp_path / "objects")
    model_dir = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["version"] = "review-multi-v1"
    manifest["axes"]["style"] = {**manifest["axes"]["gender"], "kind": "multi",
                                 "values": ["Casual", "Formal", "Sporty"]}
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    with session_scope(db) as session:
        register(session, store, model_dir, status="live")
    settings = Settings(database_url=db, broker_url=REDIS_URL, object_store_url=f"file://{store.root}",
                        cache_dir=tmp_path / "cache")
    try:
        with TestClient(create_app(settings, LIMITS)) as test_client:
            yield test_client
    finally:
        with get_engine(db).begin() as connection:
            connection.exec_driver_sql("TRUNCATE model_versions")


def test_confirm_on_multi_label_axis_keeps_other_confirmed_values(
    multi_model_client: TestClient, tokens: dict[str, str], db: str,
) -> None:
    with session_scope(db) as session:
        apply_batch(session, [result("m1", (
            ("style", "Casual", 0.5, "review"), ("style", "Sporty", 0.4, "review"),
            ("gender", "Men", 0.5, "review"), ("gender", "Women", 0.4, "review")))])

    def confirm(axis: str, value: str) -> list[dict[str, str]]:
        response = multi_model_client.post(
            "/v1/products/m1/decisions", headers=auth(tokens),
            json={"decisions": [{"axis": axis, "action": "confirm", "value": value}]})
        assert response.status_code == 200, response.text
        return response.json()["changed"]

    confirm("style", "Casual")
    assert confirm("style", "Sporty") == [{"axis": "style", "value": "Sporty", "status": "confirmed"}]
    rows = tag_rows(db, "m1", "style")
    assert rows["Casual"] == ("confirmed", "human") and rows["Sporty"] == ("confirmed", "human")
    # gender is single-label in the same model: a second value replaces the first.
    confirm("gender", "Men")
    assert sorted((c["value"], c["status"]) for c in confirm("gender", "Women")) == [
        ("Men", "rejected"), ("Women", "confirmed")]


def test_unknown_axis_is_single_label(
    client: TestClient, tokens: dict[str, str], db: str, catalogue: None,
) -> None:
    """colour is not an axis of the shipped model: a confirmation there keeps the single-label rule."""
    for value in ("Blue", "Navy"):
        response = client.post("/v1/products/r1/decisions", headers=auth(tokens),
                               json={"decisions": [{"axis": "colour", "action": "confirm", "value": value}]})
        assert response.status_code == 200, response.text
    rows = tag_rows(db, "r1", "colour")
    assert rows["Blue"] == ("rejected", "human") and rows["Navy"] == ("confirmed", "human")


def test_unknown_product_is_404(client: TestClient, tokens: dict[str, str], db: str) -> None:
    response = client.post("/v1/products/nope/decisions", headers=auth(tokens),
                           json={"decisions": [{"axis": "colour", "action": "confirm", "value": "Blue"}]})
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def test_label_error_is_422_naming_index_and_nothing_applied(
    client: TestClient, tokens: dict[str, str], db: str, catalogue: None,
) -> None:
    body = {"decisions": [{"axis": "colour", "action": "confirm", "value": "Blue"},
                          {"axis": "colour", "action": "correct", "value": "Navy"}]}
    response = client.post("/v1/products/r1/decisions", headers=auth(tokens), json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "decisions[1]" in detail and "corrected_value" in detail
    assert tag_rows(db, "r1", "colour")["Blue"] == ("review", "model")  # the first one rolled back


def test_body_shape_is_checked(client: TestClient, tokens: dict[str, str], db: str) -> None:
    for body in ({"decisions": []},
                 {"decisions": [{"axis": "colour", "action": "confirm", "value": "Blue", "extra": 1}]},
                 {"decisions": [{"axis": "colour", "action": "approve", "value": "Blue"}]}):
        response = client.post("/v1/products/r1/decisions", headers=auth(tokens), json=body)
        assert response.status_code == 422, body


def test_auth(client: TestClient, tokens: dict[str, str], db: str) -> None:
    decision = {"decisions": [{"axis": "colour", "action": "confirm", "value": "Blue"}]}
    assert client.get("/v1/review").status_code == 401
    assert client.post("/v1/products/r1/decisions", json=decision).status_code == 401
    assert client.get("/v1/review", headers=auth(tokens, "reader")).status_code == 403
    response = client.post("/v1/products/r1/decisions", json=decision, headers=auth(tokens, "reader"))
    assert response.status_code == 403
    assert client.get("/v1/review", headers=auth(tokens, "admin")).status_code == 200


def test_queue_keeps_runners_up_of_a_sure_single_label_axis_out_but_not_multi_label_values(
    multi_model_client: TestClient, tokens: dict[str, str], db: str,
) -> None:
    with session_scope(db) as session:
        apply_batch(session, [result("m2", (
            ("style", "Casual", 0.9, "auto"), ("style", "Sporty", 0.4, "review"),
            ("gender", "Men", 0.99, "auto"), ("gender", "Women", 0.01, "review")))])
    body = multi_model_client.get("/v1/review", headers=auth(tokens)).json()
    assert [(i["product_id"], i["axis"], [c["value"] for c in i["candidates"]]) for i in body["items"]] == [
        ("m2", "style", ["Sporty"])]
