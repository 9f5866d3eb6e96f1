"""The live audit through the API: audit items lead the review queue, decisions on them switch values
off and on in the same transaction, and GET /v1/audit and /metrics show the switches."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from shared.apikeys import create_key
from shared.config import Settings
from shared.db.migrate import upgrade
from shared.db.session import get_engine, session_scope
from shared.db.tags import TaggingResult, apply_batch
from tests.api.conftest import LIMITS, REDIS_URL

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def auth(tokens: dict[str, str], role: str = "reviewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


def result(product_id: str, tags: tuple[tuple[Any, ...], ...]) -> TaggingResult:
    return TaggingResult(
        event_id=f"e-{product_id}", product_id=product_id, seller_id="s1", title=f"Product {product_id}",
        description=None, image_uri=None, locale=None, occurred_at=T0, content_hash=f"h-{product_id}",
        model_version="v1", tags=tags,
    )


@pytest.fixture
def audited(db: str) -> str:
    """u1, u2: uncertain; a1: an applied gender sampled for audit (newest); a2: a colour held back
    because its value is switched off (paused); s1: a sure colour, applied and not sampled."""
    with session_scope(db) as session:
        apply_batch(session, [
            result("u1", (("colour", "Blue", 0.60, "review"), ("colour", "Navy", 0.35, "review"))),
            result("u2", (("type", "Bag", 0.30, "review"),)),
            result("a1", (("gender", "Men", 0.99, "auto", "audit"), ("gender", "Women", 0.01, "review"))),
            result("a2", (("colour", "Red", 0.99, "review", "paused"), ("colour", "Maroon", 0.10, "review"))),
            result("s1", (("colour", "Green", 0.97, "auto"), ("colour", "Olive", 0.02, "review"))),
        ])
    with get_engine(db).begin() as connection:
        for product_id, hours in (("a1", 2), ("a2", 1)):
            connection.execute(sa.text("UPDATE product_tags SET updated_at = :t WHERE product_id = :p"),
                               {"t": T0 + timedelta(hours=hours), "p": product_id})
    return db


def queue(client: TestClient, tokens: dict[str, str], **params: Any) -> list[tuple[str, str]]:
    response = client.get("/v1/review", params=params, headers=auth(tokens))
    assert response.status_code == 200, response.text
    return [(item["product_id"], item["axis"]) for item in response.json()["items"]]


def decide(client: TestClient, tokens: dict[str, str], product_id: str, axis: str, action: str,
           value: str) -> None:
    response = client.post(f"/v1/products/{product_id}/decisions", headers=auth(tokens),
                           json={"decisions": [{"axis": axis, "action": action, "value": value}]})
    assert response.status_code == 200, response.text


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient, tokens: dict[str, str]) -> Samples:
    got = client.get("/metrics", headers=auth(tokens, "reader"))
    assert got.status_code == 200, got.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(got.text) for s in family.samples}


def test_audit_items_come_first_most_recent_first(client: TestClient, tokens: dict[str, str],
                                                  audited: str) -> None:
    body = client.get("/v1/review", headers=auth(tokens)).json()
    assert [(i["product_id"], i["axis"], i["audit"]) for i in body["items"]] == [
        ("a1", "gender", True), ("a2", "colour", True), ("u2", "type", False), ("u1", "colour", False)]
    a1, a2 = body["items"][:2]
    assert a1["candidates"] == [{"value": "Men", "score": 0.99, "reason": "audit"},
                                {"value": "Women", "score": 0.01, "reason": None}]
    assert [c["reason"] for c in a2["candidates"]] == ["paused", None]
    assert queue(client, tokens, axis="colour") == [("a2", "colour"), ("u1", "colour")]
    seen, cursor = [], None  # one item a page: the cursor carries over from the audit part
    while True:
        page = client.get("/v1/review", params={"limit": 1, **({"cursor": cursor} if cursor else {})},
                          headers=auth(tokens)).json()
        seen += [(i["product_id"], i["axis"]) for i in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == queue(client, tokens)


def test_decisions_on_audit_tags_switch_values_in_the_same_transaction(
    client: TestClient, tokens: dict[str, str], audited: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "tagger.audit")
    assert client.get("/v1/audit", headers=auth(tokens, "reader")).json()["items"] == []
    decide(client, tokens, "a1", "gender", "reject", "Men")  # the audited tag was wrong
    decide(client, tokens, "a2", "colour", "confirm", "Red")  # the paused one was right
    decide(client, tokens, "u1", "colour", "confirm", "Blue")  # not audit evidence: no switch
    assert queue(client, tokens) == [("u2", "type")]

    body = client.get("/v1/audit", headers=auth(tokens, "reader")).json()
    assert body["confidence"] == 0.95
    red, men = body["items"]  # by axis, then value
    assert {k: men[k] for k in ("axis", "value", "enabled", "n", "hits", "precision", "lower", "target")} == {
        "axis": "gender", "value": "Men", "enabled": False, "n": 1, "hits": 0, "precision": 0.0,
        "lower": 0.0, "target": 0.98}
    assert men["upper"] == pytest.approx(0.95) and men["changed_at"] is not None
    assert "upper bound 0.9500 < 0.9800" in men["reason"]
    assert (red["value"], red["enabled"], red["n"], red["hits"]) == ("Red", True, 1, 1)
    assert red["changed_at"] is None  # on from the start: never flipped
    assert 'auto_switched_off axis="gender" value="Men" n=1 hits=0' in caplog.text
    only = client.get("/v1/audit", params={"axis": "colour"}, headers=auth(tokens, "admin")).json()
    assert [i["value"] for i in only["items"]] == ["Red"]

    samples = scrape(client, tokens)
    men_labels, red_labels = (("axis", "gender"), ("value", "Men")), (("axis", "colour"), ("value", "Red"))
    assert samples[("tagger_auto_enabled", men_labels)] == 0
    assert samples[("tagger_auto_enabled", red_labels)] == 1
    assert samples[("tagger_audit_precision_upper", men_labels)] == pytest.approx(0.95)
    assert samples[("tagger_audit_precision_lower", red_labels)] == pytest.approx(0.05)
    assert samples[("tagger_audit_decisions", men_labels)] == 1

    decide(client, tokens, "a1", "gender", "confirm", "Men")  # the reviewer corrects their decision
    [men] = client.get("/v1/audit", params={"axis": "gender"}, headers=auth(tokens, "reader")).json()["items"]
    assert (men["enabled"], men["n"], men["hits"]) == (True, 1, 1)
    assert scrape(client, tokens)[("tagger_auto_enabled", men_labels)] == 1
    assert 'auto_switched_on axis="gender" value="Men" n=1 hits=1' in caplog.text


def test_audit_route_needs_a_reader_key(client: TestClient, tokens: dict[str, str], db: str) -> None:
    assert client.get("/v1/audit").status_code == 401
    assert client.get("/v1/audit", headers=auth(tokens, "producer")).status_code == 403
    assert client.get("/v1/audit", headers=auth(tokens, "reviewer")).status_code == 403


def test_scrape_leaves_the_audit_series_out_when_the_table_cannot_be_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path / 'tagger.db'}"
    upgrade(url)
    with session_scope(url) as session:
        token = create_key(session, "scraper", "reader")[1]
    app = create_app(Settings(database_url=url, broker_url=REDIS_URL), LIMITS)
    with TestClient(app) as client:
        with session_scope(url) as session:  # one switch, so there is a series to lose
            session.execute(sa.text(
                "INSERT INTO auto_switches (axis, value, enabled, n, hits, lower, upper, target, reason, "
                "updated_at) VALUES ('gender', 'Men', 0, 1, 0, 0, 0.95, 0.98, 'x', '2025-03-01 12:00:00')"))
        men = ("tagger_auto_enabled", (("axis", "gender"), ("value", "Men")))
        assert scrape(client, {"reader": token})[men] == 0
        with get_engine(url).begin() as connection:
            connection.exec_driver_sql("DROP TABLE auto_switches")
        samples = scrape(client, {"reader": token})
    assert not any(name.startswith(("tagger_auto_enabled", "tagger_audit_")) for name, _ in samples)
    assert "audit_switches_unavailable" in caplog.text
