"""``POST /v1/events``: sellers send one product.uploaded event or a batch; recorded, then enqueued.

The order is the guarantee: rows are committed before anything is published, so a broker outage
costs latency, never events (the answer says ``queued: false`` and the sweeper sends them later).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, require
from api.config import ApiSettings
from api.errors import AUTH_ERRORS, BadRequest, LimitExceeded, responses
from api.guards import GuardedRoute, read_body
from api.openapi import ref
from api.state import AppState, get_state
from shared.config import Settings
from shared.events import JsonRefused, ProductUploaded, format_errors, parse_json
from shared.metrics import count_ingest
from shared.outbox import record_and_send
from shared.publish import BrokerUnavailable

log = logging.getLogger("tagger.api.ingest")
router = APIRouter(prefix="/v1", tags=["ingest"], route_class=GuardedRoute)


class Rejected(BaseModel):
    """One event of the request that was refused, with a ``field: reason`` line per problem."""

    index: int
    event_id: str | None
    errors: list[str]


class IngestResult(BaseModel):
    """The answer to a POST: accepted ids, rejected items, and whether the accepted ones are queued."""

    accepted: list[str]
    rejected: list[Rejected]
    queued: bool


def _items(body: bytes, max_batch: int) -> list[Any]:
    """The request's events as a list (one object is a batch of one), within the batch limit."""
    try:
        data = parse_json(body)  # bounded depth and numbers: never a RecursionError or a 4,300-digit int
    except JsonRefused as exc:
        raise BadRequest(f"body: {exc}", parameter="body") from None
    items = data if isinstance(data, list) else [data]
    if not isinstance(data, list | dict):
        raise BadRequest("body must be a product.uploaded event object or a JSON list of them")
    if not items:
        raise BadRequest("the list of events is empty")
    if len(items) > max_batch:
        raise LimitExceeded(
            f"batch of {len(items)} events exceeds the limit of {max_batch} events per request "
            "(max_batch, TAGGER_API_MAX_BATCH); split it", limit={"name": "max_batch", "value": max_batch},
        )
    return items


def _validate(items: list[Any], settings: Settings) -> tuple[list[ProductUploaded], list[Rejected]]:
    """Each item on its own: a bad event is listed with its field errors and the others go on."""
    accepted: dict[str, ProductUploaded] = {}  # a repeated event_id in one batch is one event
    rejected: list[Rejected] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            rejected.append(Rejected(index=index, event_id=None, errors=["event: expected a JSON object"]))
            continue
        try:
            event = ProductUploaded.model_validate(item, context={"settings": settings})
        except ValidationError as exc:
            event_id = item.get("event_id")
            # Echoed only if it is a valid id itself: a NUL or control character never goes back out.
            shown = event_id if isinstance(event_id, str) and not any(
                e["loc"] == ("event_id",) for e in exc.errors()) else None
            rejected.append(Rejected(index=index, event_id=shown, errors=format_errors(exc)))
            continue
        accepted.setdefault(event.event_id, event)
    return list(accepted.values()), rejected


def _record_and_enqueue(state: AppState, events: list[ProductUploaded]) -> bool:
    """Commit the rows, then publish (the outbox, :mod:`shared.outbox`); True when every event that
    needs sending reached the broker."""
    try:
        record_and_send(state.settings.database_url, events, state.publisher.publish)
    except BrokerUnavailable as exc:
        # Recorded and committed, and none marked enqueued: some may have reached the queue (a failed
        # pipeline cannot say which), so the sweeper re-sends them all once the broker is back; the
        # worker de-duplicates by event_id.
        log.warning("events_not_queued n=%d known_queued=%d broker=%s",
                    exc.total, exc.sent, state.publisher.broker)
        return False
    return True


# The body is read raw (see _read_body), so FastAPI cannot see it: describe it here. maxItems is a
# setting, hence in the description and not in the schema (the document must not depend on the env).
_MAX_BATCH = ApiSettings.model_fields["max_batch"].default
_BODY = {
    "required": True,
    "description": (
        f"One product.uploaded event, or a JSON list of them (at most TAGGER_API_MAX_BATCH events, "
        f"default {_MAX_BATCH}; the body at most TAGGER_API_MAX_BODY_BYTES bytes). Each event is "
        "validated on its own: the valid ones are accepted, the others listed with their field errors."
    ),
    "content": {"application/json": {"schema": {"oneOf": [
        ref(ProductUploaded),
        {"type": "array", "items": ref(ProductUploaded), "minItems": 1, "title": "Batch"},
    ]}}},
}


@router.post(
    "/events", status_code=202, response_model=IngestResult, openapi_extra={"requestBody": _BODY},
    responses={
        **responses(400, *AUTH_ERRORS,
                    (413, "Body or batch over its configured limit (``limit`` names it).")),
        422: {"model": IngestResult, "description": "Every event in the request was invalid."},
    },
)
async def post_events(
    request: Request, principal: Annotated[Principal, Depends(require("producer"))],
) -> JSONResponse:
    """Accept one event or a list; 202 with accepted ids (idempotent on event_id), 422 if none is valid."""
    state = get_state(request)
    items = _items(await read_body(request), state.api.max_batch)
    events, rejected = _validate(items, state.settings)
    queued = await run_in_threadpool(_record_and_enqueue, state, events) if events else False
    result = IngestResult(accepted=[e.event_id for e in events], rejected=rejected, queued=queued)
    count_ingest(len(events), len(rejected))
    log.info("events_ingested key=%s accepted=%d rejected=%d queued=%s",
             principal.key_id, len(events), len(rejected), queued)
    return JSONResponse(result.model_dump(mode="json"), status_code=202 if events else 422)
