"""``POST /v1/events``: sellers send one product.uploaded event or a batch; recorded, then enqueued.

The order is the guarantee: rows are committed before anything is published, so a broker outage
costs latency, never events (the answer says ``queued: false`` and the sweeper sends them later).

Group commit: concurrent requests share one outbox round (one INSERT and commit, one Redis pipeline,
one mark) instead of one each. The round answers once its events are recorded and published; their
'enqueued' marks ride in the next round's record statement, or a transaction of their own once the API
is idle (``TAGGER_API_INGEST_DEFER_MARKS``, :class:`shared.outbox.DeferredMarks`). A request's
events join the next round; at most ``TAGGER_API_INGEST_ROUNDS`` rounds (default 1) run at once,
so requests that arrive while they run wait for the next (no timer: an idle API sends a lone
request at once). Every request of a round
gets the round's answer; a round the database refuses for a reason other than being unreachable is
retried request by request, so one request's bad data fails only that request.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import OperationalError
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
from shared.outbox import DeferredMarks, record_and_send
from shared.publish import BrokerUnavailable, recorded_events

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


def _record_and_enqueue(state: AppState, events: list[ProductUploaded], defer_marks: bool = False) -> bool:
    """Commit the rows, then publish (the outbox, :mod:`shared.outbox`); True when every event that
    needs sending reached the broker. ``defer_marks``: leave the marks to ``state.marks``."""
    try:
        record_and_send(state.settings.database_url, events,
                        lambda payloads: state.publisher.publish(recorded_events(payloads, events)),
                        state.marks if defer_marks else None)
    except BrokerUnavailable as exc:
        # Recorded and committed, and none marked enqueued: some may have reached the queue (a failed
        # pipeline cannot say which), so the sweeper re-sends them all once the broker is back; the
        # worker de-duplicates by event_id.
        log.warning("events_not_queued n=%d known_queued=%d broker=%s",
                    exc.total, exc.sent, state.publisher.broker)
        return False
    return True


@dataclass
class _Waiting:
    events: list[ProductUploaded]
    answer: asyncio.Future[bool]


@dataclass
class GroupCommit:
    """Coalesces concurrent requests' events into shared outbox rounds (see the module docstring).
    Lives on the app (``app.state``) and runs on its event loop; ``send`` runs in the thread pool."""

    send: Any  # (events) -> bool: _record_and_enqueue bound to the app's state
    max_events: int  # events per round at most (a request is never split)
    in_flight: int = 1  # rounds at once (TAGGER_API_INGEST_ROUNDS)
    marks: DeferredMarks | None = None  # the rounds' deferred marks, flushed when idle
    flush: Any = None  # () -> int: writes ``marks`` (DeferredMarks.flush bound to the database)
    _waiting: list[_Waiting] = field(default_factory=list)
    _running: int = 0
    _flushing: bool = False

    async def submit(self, events: list[ProductUploaded]) -> bool:
        waiting = _Waiting(events, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._start_rounds()
        return await waiting.answer

    def _start_rounds(self) -> None:
        while self._running < self.in_flight and self._waiting:
            group, total = [], 0
            while self._waiting and (not group or total + len(self._waiting[0].events) <= self.max_events):
                total += len(self._waiting[0].events)
                group.append(self._waiting.pop(0))
            self._running += 1
            asyncio.get_running_loop().create_task(self._round(group))

    async def _round(self, group: list[_Waiting]) -> None:
        try:
            # A client that left (its answer cancelled) still has its events recorded and sent.
            events = _unique([e for w in group for e in w.events])
            try:
                queued = await run_in_threadpool(self.send, events)
                answers: list[tuple[bool, BaseException | None]] = [(queued, None)] * len(group)
            except OperationalError as exc:  # unreachable: every request says so (503), none retried
                answers = [(False, exc)] * len(group)
            except Exception as exc:
                if len(group) == 1:
                    answers = [(False, exc)]
                else:  # refused: request by request, so one request's bad data fails only that request
                    answers = []
                    for w in group:
                        try:
                            answers.append((await run_in_threadpool(self.send, w.events), None))
                        except Exception as alone:  # noqa: BLE001  (handed to that request)
                            answers.append((False, alone))
            for w, (queued, error) in zip(group, answers, strict=True):
                if w.answer.done():
                    continue
                if error is not None:
                    w.answer.set_exception(error)
                else:
                    w.answer.set_result(queued)
        except BaseException as exc:  # cancelled (shutdown): nobody may wait forever
            stopped = exc if isinstance(exc, Exception) else RuntimeError("ingest stopped")
            for w in group:
                if not w.answer.done():
                    w.answer.set_exception(stopped)
            raise
        finally:
            self._running -= 1
            self._start_rounds()
            self._flush_when_idle()

    def _flush_when_idle(self) -> None:
        """Idle, with marks pending: write them now (a busy API writes them with its next round)."""
        if self._running or self._waiting or self._flushing or not self.marks:
            return
        self._flushing = True
        asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            await run_in_threadpool(self.flush)
        except Exception as exc:  # noqa: BLE001  (they stay pending; the next round writes them)
            log.warning("enqueued_marks_not_written n=%d error=%s", len(self.marks or ()), exc)
            return
        finally:
            self._flushing = False
        self._flush_when_idle()  # rounds that ended meanwhile left theirs


def _unique(events: list[ProductUploaded]) -> list[ProductUploaded]:
    """The same event_id in two requests of a round is one event (the first), as within a request."""
    seen: dict[str, ProductUploaded] = {}
    for e in events:
        seen.setdefault(e.event_id, e)
    return list(seen.values())


def _group_commit(request: Request, state: AppState) -> GroupCommit:
    app_state = request.app.state
    group = getattr(app_state, "ingest_group_commit", None)
    if group is None:
        defer = state.api.ingest_defer_marks
        group = app_state.ingest_group_commit = GroupCommit(
            send=lambda events: _record_and_enqueue(state, events, defer),
            max_events=max(1, state.api.max_batch), in_flight=state.api.ingest_rounds,
            marks=state.marks if defer else None,
            flush=lambda: state.marks.flush(state.settings.database_url))
    return group


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
    if not events:
        queued = False
    elif state.api.ingest_rounds > 0:
        queued = await _group_commit(request, state).submit(events)
    else:
        queued = await run_in_threadpool(_record_and_enqueue, state, events)
    result = IngestResult(accepted=[e.event_id for e in events], rejected=rejected, queued=queued)
    count_ingest(len(events), len(rejected))
    log.info("events_ingested key=%s accepted=%d rejected=%d queued=%s",
             principal.key_id, len(events), len(rejected), queued)
    return JSONResponse(result.model_dump(mode="json"), status_code=202 if events else 422)
