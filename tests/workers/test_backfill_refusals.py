"""A backfill refuses, one by one and with a logged reason, stored products the event contract no longer
accepts (ids with '/', stored before ids had to be one URL path segment); the others are sent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.config import Settings
from shared.db.models import Product
from shared.db.session import session_scope
from shared.db.tags import TaggingResult, apply_batch
from shared.events import ProductUploaded
from workers.backfill import backfill_events, run_backfill

NOW = datetime.now(UTC)


def product(product_id: str, at: datetime = NOW) -> Product:
    return Product(product_id=product_id, seller_id="s", title="Secret seller title", description=None,
                   image_uri="s3://private-bucket/x.jpg", locale=None, content_hash="h", last_event_at=at,
                   model_version="old")


def test_products_the_contract_refuses_are_left_out_alone_with_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="workers.backfill")
    products = [product("ok-1"), product("a/b"), product(".."), product("tab\there"),
                product("future", NOW + timedelta(days=365)), product("ok-2")]
    events = backfill_events(products, "v2")
    assert [e.product_id for e in events] == ["ok-1", "ok-2"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("backfill_refused product_id='a/b' reason=product_id: must not contain '/' "
                        "(the API's /v1/products/{product_id} routes could not address it)")
    assert lines[1].startswith("backfill_refused product_id='..' reason=product_id: must not be '.' or '..'")
    assert lines[2].startswith("backfill_refused product_id='tab\\there' reason=")
    assert "product_id: contains a control character" in lines[2]
    assert lines[3].startswith("backfill_refused product_id='future' reason=occurred_at: is more than")
    assert len(lines) == 4 and not any("Secret" in line or "private-bucket" in line for line in lines)


def test_a_run_sends_the_others_instead_of_failing(
    make_db: Callable[..., str], settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="workers.backfill")
    s = Settings(database_url=make_db(), cache_dir=settings.cache_dir)
    with session_scope(s.database_url) as session:  # as an older worker stored them, before the rule
        apply_batch(session, [
            TaggingResult(event_id=f"seed-{p}", product_id=p, seller_id="s1", title="Secret seller title",
                          description=None, image_uri=None, locale=None, occurred_at=NOW, content_hash="h",
                          model_version="old", tags=[("gender", "Men", 0.9, "auto")])
            for p in ("p1", "a/b", "p2")
        ])
    sent: list[ProductUploaded] = []
    assert run_backfill(s, sent.extend, live="new", rate=1000) == 2
    assert sorted(e.product_id for e in sent) == ["p1", "p2"]
    assert [r.getMessage().split(" reason=")[0] for r in caplog.records] == [
        "backfill_refused product_id='a/b'"]
