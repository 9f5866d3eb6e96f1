"""What a batch does with each delivery it cannot simply tag: decode it, dead-letter it, send it back.

celery-batches acks every request of a batch when the batch returns, even when it raised, so
a failed batch must hand each of its events on itself: re-enqueued with ``attempt + 1``, or
dead-lettered once it has had ``max_attempts``. A delivery that can be neither (database and
broker both down) is reported back to :mod:`workers.batching`, which leaves it to the broker.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db.events import record_dead_letter, record_failure
from shared.db.models import TaggingEvent
from shared.db.session import session_scope
from shared.events import ProductUploaded, format_errors
from shared.tasks import TAG_PRODUCT

log = logging.getLogger("workers.deliveries")

MAX_BACKOFF_S = 30


@dataclass(frozen=True)
class Delivery:
    """One request of a batch: a valid ``event`` to tag, or a ``reason`` to dead-letter it."""

    req: Any
    attempt: int
    event: ProductUploaded | None = None
    reason: str | None = None

    @property
    def event_id(self) -> str | None:
        if self.event is not None:
            return self.event.event_id
        raw = _kwargs(self.req).get("event")
        if isinstance(raw, dict) and raw.get("event_id") not in (None, ""):
            return str(raw["event_id"]).replace("\x00", "\ufffd")[:200]
        return None


def _kwargs(req: Any) -> dict:
    return req.kwargs if isinstance(req.kwargs, dict) else {}


def _has_nul(value: Any) -> bool:
    """Postgres text cannot hold NUL: such an event could never be written, so it is malformed."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def decode(req: Any, max_attempts: int) -> Delivery:
    """Validate one request; never raises (a bad message must not fail its batch)."""
    if not isinstance(req.kwargs, dict):
        return Delivery(req, 1, reason="message: keyword arguments must be an object")
    kwargs = req.kwargs
    attempt = kwargs.get("attempt", 1)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        return Delivery(req, 1, reason="attempt: must be a positive integer")
    raw = kwargs.get("event")
    if _has_nul(raw):
        return Delivery(req, attempt, reason="event: contains a NUL character")
    try:
        event = ProductUploaded.model_validate(raw)
    except ValidationError as exc:
        return Delivery(req, attempt, reason="; ".join(format_errors(exc)))
    if attempt > max_attempts:  # its last attempt failed and so did dead-lettering it then
        last = kwargs.get("last_error")
        return Delivery(req, attempt, event, reason=str(last) if last else "attempts exhausted")
    return Delivery(req, attempt, event)


def payload(req: Any) -> str:
    """The message as received, for the dead letter (JSON escapes NUL, so Postgres can store it)."""
    try:
        return json.dumps({"args": list(req.args or ()), "kwargs": req.kwargs or {}}, default=str)
    except (TypeError, ValueError):
        return json.dumps({"repr": repr(req.kwargs)})


def dead_letter(session: Session, d: Delivery, reason: str) -> None:
    """Record ``d`` as given up on (never commits). A valid event also gets its tagging_events row,
    status dead; an event already tagged (another copy succeeded) is left tagged."""
    event_id = d.event_id
    status = None
    if event_id is not None:
        status = session.scalar(sa.select(TaggingEvent.status).where(TaggingEvent.event_id == event_id))
    if d.event is not None:
        if status == "tagged":
            log.info("dead_letter_skipped event_id=%s reason=already_tagged", event_id)
            return
        record_failure(session, d.event.event_id, d.event.product_id, reason, d.attempt)
    elif status is not None:
        # A malformed copy must not mark the real event dead: keep the id in the payload only.
        event_id = None
    record_dead_letter(session, event_id, payload(d.req), reason[:2000], d.attempt)


def _requeue(app: Any, s: Settings, d: Delivery, reason: str) -> None:
    kwargs = dict(_kwargs(d.req))
    if d.event is not None:
        kwargs["event"] = d.event.model_dump(mode="json")
    kwargs.update(attempt=d.attempt + 1, last_error=reason)
    app.send_task(TAG_PRODUCT.name, args=list(d.req.args or ()), kwargs=kwargs,
                  queue=TAG_PRODUCT.queue_name(s), countdown=min(2 ** d.attempt, MAX_BACKOFF_S))


def requeue_or_dead_letter(app: Any, s: Settings, deliveries: list[Delivery], reason: str) -> list[str]:
    """Hand on every delivery of a failed batch: dead-letter those that are due (out of attempts, or
    malformed), re-enqueue the rest with ``attempt + 1`` after a back-off. A dead letter that cannot
    be written is re-enqueued instead. Returns the request ids that could be neither.

    ``reason`` is the failure's kind (e.g. ``infer: RuntimeError``), never its message: a message may
    quote another event's data, and the reason travels with every event of the batch."""
    reason = reason[:2000]
    db_up = True
    unhanded: list[str] = []
    for d in deliveries:
        why = d.reason or reason
        if db_up and (d.reason is not None or d.attempt >= s.max_attempts):
            try:
                with session_scope(s.database_url) as session:
                    dead_letter(session, d, why)
                log.warning("dead_lettered event_id=%s attempts=%d", d.event_id, d.attempt)
                continue
            except Exception as exc2:  # database still down: keep the event moving instead
                log.warning("dead_letter_failed event_id=%s error=%s", d.event_id, type(exc2).__name__)
                db_up = False
        try:
            _requeue(app, s, d, why)
            log.info("requeued event_id=%s attempt=%d", d.event_id, d.attempt + 1)
        except Exception:
            log.exception("requeue_failed event_id=%s", d.event_id)
            unhanded.append(d.req.id)
    return unhanded
