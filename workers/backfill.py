"""Re-tag products whose model tags came from an older model, through the normal queue.

Throttled (``rate`` events/s) and resumable: the selection skips products already tagged by the
live version, and event ids are derived from (live version, product), so running it again after
an interruption re-sends only what is left, and a duplicate is de-duplicated by the worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from shared.config import Settings
from shared.db.models import ModelVersion, Product
from shared.db.session import session_scope
from shared.events import ProductUploaded


def stale_products(s: Settings, live: str, older_than: str | None, limit: int) -> list[Product]:
    """Products tagged by another version than ``live`` (or by versions created before
    ``older_than``), oldest first; detached rows."""
    with session_scope(s.database_url) as session:
        q = sa.select(Product).where(Product.model_version.is_not(None), Product.model_version != live)
        if older_than:
            cutoff = session.scalar(
                sa.select(ModelVersion.created_at).where(ModelVersion.version == older_than))
            if cutoff is None:
                raise ValueError(f"--older-than: unknown model version {older_than!r}")
            older = sa.select(ModelVersion.version).where(ModelVersion.created_at < cutoff)
            q = q.where(sa.or_(Product.model_version.in_(older), Product.model_version == older_than))
        rows = session.scalars(q.order_by(Product.updated_at, Product.product_id).limit(limit)).all()
        session.expunge_all()
        return list(rows)


def backfill_events(products: list[Product], live: str) -> list[ProductUploaded]:
    return [
        ProductUploaded(
            event_id=f"backfill-{live}-{p.product_id}"[:200], product_id=p.product_id,
            seller_id=p.seller_id, title=p.title, description=p.description, image_uri=p.image_uri,
            locale=p.locale, occurred_at=p.last_event_at,  # same upload: not newer, not stale
        )
        for p in products
    ]


def run_backfill(
    s: Settings, publish: Callable[[list[ProductUploaded]], object], live: str,
    older_than: str | None = None, rate: float = 50.0, limit: int = 1_000_000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Publish re-tag events at most ``rate`` per second; returns how many were sent."""
    events = backfill_events(stale_products(s, live, older_than, limit), live)
    sent, started = 0, time.monotonic()
    chunk = max(1, int(rate))  # about one publish call per second
    for i in range(0, len(events), chunk):
        publish(events[i : i + chunk])
        sent += len(events[i : i + chunk])
        if progress:
            progress(len(events[i : i + chunk]))
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0 and i + chunk < len(events):
            time.sleep(ahead)
    return sent
