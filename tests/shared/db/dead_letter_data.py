"""Dead letters as the worker writes them (workers/deliveries.py), for every layer's dead-letter tests."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from shared.db.events import record_dead_letter, record_failure

OCCURRED = "2025-06-01T10:00:00+00:00"


def dead_event(n: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"evt-{n}", "product_id": f"sku-{n}", "seller_id": "seller-1",
            "title": f"Secret seller title {n}", "image_uri": f"s3://private-bucket/p{n}.jpg",
            "occurred_at": OCCURRED, **extra}


def message(event: Any, attempt: int = 3) -> str:
    """The stored payload: the Celery request's args and kwargs as JSON."""
    return json.dumps({"args": [], "kwargs": {"event": event, "attempt": attempt}})


def add_dead_letter(session: Session, event: dict[str, Any] | None = None, *,
                    reason: str = "OperationalError: database unavailable", attempts: int = 3,
                    payload: str | None = None, event_id: str | None = None) -> int:
    """Record a given-up message the way the worker does: failure row, then dead letter (status dead)."""
    if event is not None:
        record_failure(session, event["event_id"], event["product_id"], reason, attempts)
        event_id = event["event_id"]
    return record_dead_letter(session, event_id, payload or message(event), reason, attempts)
