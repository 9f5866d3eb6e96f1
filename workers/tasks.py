"""Task declarations only: names, queues and options come from :mod:`shared.tasks`; the work lives
in plain functions that tests call directly. Settings come from the app each task runs in.

Shared tasks (``shared_task``): every app that imports this module (its ``include``), built before
or after, gets them — ``tagger worker``, ``celery -A workers.app``, the demo's embedded worker."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from shared.tasks import CHECK_NEW_LABELS, RETRAIN, SWEEP_INGESTED, TAG_PRODUCT
from workers import tagging
from workers.app import settings_of
from workers.batching import ReliableBatches


class TaggingBatches(ReliableBatches):
    """The batch size and flush interval are the app's settings, read when the worker starts
    consuming (not when this module is imported)."""

    abstract = True

    @property
    def flush_every(self) -> int:  # type: ignore[override]
        return settings_of(self.app).batch_size

    @property
    def flush_interval(self) -> float:  # type: ignore[override]
        return settings_of(self.app).flush_interval_s


@shared_task(base=TaggingBatches, bind=True, **TAG_PRODUCT.options)
def tag_product(self: Any, requests: list) -> dict:
    """A batch of product.uploaded events -> tags in the database; acked when this returns."""
    return tagging.process_batch(requests, tagging.runtime(settings_of(self.app)), self.app)


@shared_task(bind=True, **RETRAIN.options)
def retrain(self: Any, reason: str = "schedule") -> dict:
    """Acked on receipt (not late): a long retrain must never be redelivered while it runs; the
    advisory lock makes a second concurrent trigger a no-op."""
    from workers.retraining import run_retrain

    return run_retrain(settings_of(self.app), reason=reason)


@shared_task(bind=True, **CHECK_NEW_LABELS.options)
def check_new_labels(self: Any) -> int:
    """Start a retrain once enough new human labels arrived since the live model (the decision
    is :func:`workers.retraining.trigger_on_new_labels`)."""
    from workers.retraining import retrain_enqueuer, trigger_on_new_labels

    s = settings_of(self.app)
    return trigger_on_new_labels(s, retrain_enqueuer(self.app, s))


@shared_task(bind=True, **SWEEP_INGESTED.options)
def sweep_ingested(self: Any) -> int:
    """Re-publish events the API recorded but never got onto the queue."""
    from shared.publish import BrokerUnavailable, Publisher
    from workers.sweeper import sweep

    s = settings_of(self.app)
    try:
        with Publisher.from_settings(s) as publisher:
            return sweep(s, publisher, s.sweep_after_s)
    except BrokerUnavailable:
        return 0  # the next beat tick tries again
