"""Re-enqueue events the API recorded but no worker has taken: nothing accepted is ever lost.

Run it periodically (a Celery beat entry, or ``sweep`` from any scheduler). Sending is
at-least-once: a re-sent event that a worker already has is de-duplicated there by event_id.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from shared.config import Settings
from shared.db.base import utcnow
from shared.db.events import claim_stragglers, mark_enqueued, mark_unsendable
from shared.db.session import session_scope
from shared.events import ProductUploaded, format_errors
from shared.publish import Publisher

log = logging.getLogger("workers.sweeper")
CHUNK = 500


def sweep(settings: Settings, publisher: Publisher, older_than_s: float, *,
          lost_after_s: float | None = None, chunk: int = CHUNK) -> int:
    """Publish 'received' events never queued for ``older_than_s`` (or queued longer ago than
    ``lost_after_s``, default the broker's visibility timeout); returns how many were sent.

    Each chunk is claimed, sent, marked and committed in one transaction, so a crash re-sends at
    most one chunk. Raises ``BrokerUnavailable`` when the broker is down: the failing chunk's
    transaction rolls back, so all its rows stay unqueued and the next sweep sends them again, even
    those that reached the queue before the failure (the worker de-duplicates by event_id).
    """
    if getattr(publisher, "database_url", None) is not None:  # it would wait on its own row locks
        raise ValueError("sweep() sends rows it holds locked: give it a Publisher without an outbox")
    lost_after = float(settings.visibility_timeout_s if lost_after_s is None else lost_after_s)
    now = utcnow()
    sent = unsendable = 0
    while True:
        with session_scope(settings.database_url) as session:
            rows = claim_stragglers(session, now=now, older_than_s=older_than_s,
                                    lost_after_s=lost_after, limit=chunk)
            events: list[ProductUploaded] = []
            for event_id, payload in rows:
                try:
                    events.append(ProductUploaded.model_validate(payload))
                except ValidationError as exc:
                    unsendable += 1
                    mark_unsendable(session, event_id, "; ".join(format_errors(exc)), now)
            publisher.publish(events)
            mark_enqueued(session, [e.event_id for e in events], now)
        sent += len(events)
        if len(rows) < chunk:
            break
    if sent or unsendable:
        log.info("events_swept sent=%d unsendable=%d", sent, unsendable)
    return sent
