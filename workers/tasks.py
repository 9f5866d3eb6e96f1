"""Task declarations only; the work lives in plain functions that tests call directly."""

from __future__ import annotations

from shared.config import get_settings
from shared.events import TAG_TASK
from workers import tagging
from workers.app import app
from workers.batching import ReliableBatches
from workers.retraining import RETRAIN_TASK

_s = get_settings()


@app.task(
    base=ReliableBatches, name=TAG_TASK, flush_every=_s.batch_size,
    flush_interval=_s.flush_interval_s, acks_late=True, ignore_result=True,
)
def tag_product(requests: list) -> dict:
    """A batch of product.uploaded events -> tags in the database; acked when this returns."""
    return tagging.process_batch(requests, tagging.runtime(), app)


@app.task(name=RETRAIN_TASK, queue=_s.training_queue, acks_late=False, ignore_result=True)
def retrain(reason: str = "schedule") -> dict:
    """Acked on receipt (not late): a long retrain must never be redelivered while it runs; the
    advisory lock makes a second concurrent trigger a no-op."""
    from workers.retraining import run_retrain

    return run_retrain(reason=reason)


@app.task(name="tagger.check_new_labels", queue=_s.training_queue, acks_late=False, ignore_result=True)
def check_new_labels() -> int:
    """Start a retrain once enough new human labels arrived since the live model (the decision
    is :func:`workers.retraining.trigger_on_new_labels`)."""
    from workers.retraining import retrain_enqueuer, trigger_on_new_labels

    return trigger_on_new_labels(_s, retrain_enqueuer(app, _s))


@app.task(name="tagger.sweep_ingested", queue=_s.training_queue, acks_late=False, ignore_result=True)
def sweep_ingested() -> int:
    """Re-publish events the API recorded but never got onto the queue."""
    from api.config import ApiSettings
    from api.sweeper import sweep
    from shared.publish import BrokerUnavailable, Publisher

    try:
        with Publisher.from_settings(_s) as publisher:
            return sweep(_s, publisher, ApiSettings().sweep_after_s)
    except BrokerUnavailable:
        return 0  # the next beat tick tries again
