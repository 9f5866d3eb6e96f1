"""Task declarations only; the work lives in plain functions that tests call directly."""

from __future__ import annotations

from shared.config import get_settings
from shared.events import TAG_TASK
from workers import tagging
from workers.app import app
from workers.batching import ReliableBatches

_s = get_settings()


@app.task(
    base=ReliableBatches, name=TAG_TASK, flush_every=_s.batch_size,
    flush_interval=_s.flush_interval_s, acks_late=True, ignore_result=True,
)
def tag_product(requests: list) -> dict:
    """A batch of product.uploaded events -> tags in the database; acked when this returns."""
    return tagging.process_batch(requests, tagging.runtime(), app)
