"""What a batch does with each delivery it cannot simply tag: decode it, dead-letter it, send it back.

celery-batches acks every request of a batch when the batch returns, even when it raised, so
a failed batch must hand each of its events on itself: re-enqueued with ``attempt + 1``, or
dead-lettered once it has had ``max_attempts``. A delivery that can be neither (database and
broker both down) is reported back to :mod:`workers.batching`, which leaves it to the broker.

A request is one message; a message may carry one event or an envelope of many
(:func:`shared.tasks.events_of`). Each event is its own :class:`Delivery`: validated, tagged,
dead-lettered (its dead letter's payload is that event alone, as a single-event message, so it can
be replayed) or re-enqueued on its own; a request is acked once all of its events are handed on.
Events re-enqueued together from one request go back as one envelope.
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
from shared.tasks import TAG_PRODUCT, MalformedMessage, events_of, tag_product_kwargs

log = logging.getLogger("workers.deliveries")

MAX_BACKOFF_S = 30


_WHOLE = object()  # Delivery.raw of a message that could not be split into events: the message is it


@dataclass(frozen=True)
class Delivery:
    """One event of a batch's request: a valid ``event`` to tag, or a ``reason`` to dead-letter it.
    ``raw``: the event as the message carried it; ``size``: how many events its message carried."""

    req: Any
    attempt: int
    event: ProductUploaded | None = None
    reason: str | None = None
    raw: Any = _WHOLE
    size: int = 1

    @property
    def event_id(self) -> str | None:
        if self.event is not None:
            return self.event.event_id
        raw = _kwargs(self.req).get("event") if self.raw is _WHOLE else self.raw
        if isinstance(raw, dict) and raw.get("event_id") not in (None, ""):
            return str(raw["event_id"]).replace("\x00", "\ufffd")[:200]
        return None

    @property
    def envelope(self) -> bool:
        return self.size > 1


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


def decode(req: Any, max_attempts: int) -> list[Delivery]:
    """Validate one request: one delivery per event it carries (a single event or an envelope), or
    one for the whole message when it cannot be split into events. Never raises: a bad message, or a
    bad event of an envelope, must not fail the rest of its envelope or batch."""
    if not isinstance(req.kwargs, dict):
        return [Delivery(req, 1, reason="message: keyword arguments must be an object")]
    kwargs = req.kwargs
    attempt = kwargs.get("attempt", 1)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        return [Delivery(req, 1, reason="attempt: must be a positive integer")]
    try:
        raws = events_of(kwargs)
    except MalformedMessage as exc:
        return [Delivery(req, attempt, reason=str(exc))]
    if "events" not in kwargs:  # the single-event message: as before envelopes
        return [_decode_one(req, kwargs, attempt, max_attempts, _WHOLE, kwargs.get("event"), 1)]
    return [_decode_one(req, kwargs, attempt, max_attempts, raw, raw, len(raws)) for raw in raws]


def _decode_one(req: Any, kwargs: dict, attempt: int, max_attempts: int, keep: Any, raw: Any,
                size: int) -> Delivery:
    if _has_nul(raw):
        return Delivery(req, attempt, reason="event: contains a NUL character", raw=keep, size=size)
    try:
        event = ProductUploaded.model_validate(raw)
    except ValidationError as exc:
        return Delivery(req, attempt, reason="; ".join(format_errors(exc)), raw=keep, size=size)
    if attempt > max_attempts:  # its last attempt failed and so did dead-lettering it then
        last = kwargs.get("last_error")
        return Delivery(req, attempt, event, reason=str(last) if last else "attempts exhausted",
                        raw=keep, size=size)
    return Delivery(req, attempt, event, raw=keep, size=size)


def payload(d: Delivery) -> str:
    """What the dead letter keeps (JSON escapes NUL, so Postgres can store it): the message as
    received, or for an event of an envelope that event alone, as a single-event message (what
    ``tagger dead-letters replay`` reads), with the envelope's task id."""
    req = d.req
    try:
        if d.raw is _WHOLE:
            return json.dumps({"args": list(req.args or ()), "kwargs": req.kwargs or {}}, default=str)
        extra = {k: v for k, v in _kwargs(req).items() if k in ("attempt", "last_error")}
        return json.dumps({"args": list(req.args or ()), "kwargs": {"event": d.raw, **extra},
                           "envelope": {"task_id": str(req.id), "events": d.size}}, default=str)
    except (TypeError, ValueError):
        return json.dumps({"repr": repr(d.raw if d.raw is not _WHOLE else req.kwargs)})


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
    record_dead_letter(session, event_id, payload(d), reason[:2000], d.attempt)


def _requeue(app: Any, s: Settings, ds: list[Delivery], reason: str) -> None:
    """Send ``ds`` (events of one request, one attempt) back as ONE message, ``attempt + 1``."""
    d = ds[0]
    if d.raw is _WHOLE:  # the single-event message (or one that is not events at all): as it came
        kwargs = dict(_kwargs(d.req))
        if d.event is not None:
            kwargs["event"] = d.event.model_dump(mode="json")
        kwargs.update(attempt=d.attempt + 1, last_error=reason)
    else:
        kwargs = tag_product_kwargs([x.event.model_dump(mode="json") if x.event is not None else x.raw
                                     for x in ds], attempt=d.attempt + 1, last_error=reason)
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
    again: dict[tuple[str, str], list[Delivery]] = {}  # (request id, reason) -> its events to re-enqueue
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
        again.setdefault((d.req.id, why), []).append(d)
    for (req_id, why), ds in again.items():
        try:
            _requeue(app, s, ds, why)
            log.info("requeued n=%d event_id=%s attempt=%d", len(ds), ds[0].event_id, ds[0].attempt + 1)
        except Exception:
            log.exception("requeue_failed n=%d event_id=%s", len(ds), ds[0].event_id)
            if req_id not in unhanded:
                unhanded.append(req_id)
    return unhanded
