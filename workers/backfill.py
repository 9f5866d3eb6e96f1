"""Re-tag products whose model tags came from an older model, through the normal queue.

Throttled (``rate`` events/s) and resumable: the selection skips products already tagged by the
live version, and event ids are derived from (live version, product), so running it again after
an interruption re-sends only what is left, and a duplicate is de-duplicated by the worker.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable

import sqlalchemy as sa
from pydantic import ValidationError

from shared.config import Settings
from shared.db.models import ModelVersion, Product
from shared.db.session import session_scope
from shared.events import ProductUploaded, format_errors

log = logging.getLogger("workers.backfill")


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


MAX_EVENT_ID = 200  # the product.uploaded contract's id limit
PUBLISHES_PER_S = 20  # at high rates events go out in chunks, about this many publish calls a second


def backfill_event_id(live: str, product_id: str) -> str:
    """``backfill-<live>-<product>``: the same for a re-run (the worker de-duplicates it), distinct
    per product. Too long for the contract, it ends in a hash of the whole id instead of being cut:
    two long product ids sharing a prefix must not collapse into one event."""
    full = f"backfill-{live}-{product_id}"
    if len(full) <= MAX_EVENT_ID:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:32]
    return f"{full[: MAX_EVENT_ID - len(digest) - 1]}-{digest}"


def backfill_events(products: list[Product], live: str) -> list[ProductUploaded]:
    """One re-tag event per product the event contract still accepts; a product it refuses (an id with
    '/', stored before the contract said ids are one URL path segment; an out-of-range upload time) is
    left out alone, logged with the field and reason, and the others go on."""
    events = []
    for p in products:
        try:
            events.append(ProductUploaded(
                event_id=backfill_event_id(live, p.product_id), product_id=p.product_id,
                seller_id=p.seller_id, title=p.title, description=p.description, image_uri=p.image_uri,
                locale=p.locale, occurred_at=p.last_event_at,  # same upload: not newer, not stale
            ))
        except ValidationError as exc:
            # The product's own id and the error kinds only: never its title or URI.
            reason = "; ".join(format_errors(exc))
            log.warning("backfill_refused product_id=%r reason=%s", p.product_id, reason)
    return events


def run_backfill(
    s: Settings, publish: Callable[[list[ProductUploaded]], object], live: str,
    older_than: str | None = None, rate: float = 50.0, limit: int = 1_000_000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Publish re-tag events at most ``rate`` per second; returns how many were sent.

    Event ``k`` (from 0) is never published before ``k / rate`` seconds after the start, so no
    burst exceeds the rate, even the first one; at high rates events go out in small chunks, each
    when the slot of its last event has come.
    """
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number of events per second, not {rate}")
    events = backfill_events(stale_products(s, live, older_than, limit), live)
    chunk = max(1, int(rate // PUBLISHES_PER_S))
    sent, started = 0, time.monotonic()
    for i in range(0, len(events), chunk):
        batch = events[i : i + chunk]
        wait = started + (i + len(batch) - 1) / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        publish(batch)
        sent += len(batch)
        if progress:
            progress(len(batch))
    return sent
