"""Dead letters for operators: list, show one, replay through the normal path. Role ``admin`` only.

Listing never carries a payload (seller titles, image URIs): only ids, the reason (an error kind)
and the replay history; ``GET /v1/dead-letters/{id}`` shows the payload. A replay is idempotent:
see shared/db/dead_letters.py and docs/DEAD-LETTERS.md.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from api.auth import Principal, require
from api.errors import AUTH_ERRORS, InvalidParameter, NotFound, responses
from api.guards import GuardedRoute
from api.paging import NotAKey, decode_cursor, encode_cursor
from api.state import get_state
from shared.db import dead_letters as store
from shared.db.dead_letters import MAX_ID, SKIP_REASONS, Filters, Summary
from shared.db.session import session_scope
from shared.events import plain_id

log = logging.getLogger("tagger.api.dead_letters")
router = APIRouter(prefix="/v1", tags=["dead letters"], route_class=GuardedRoute,
                   dependencies=[Depends(require("admin"))])

MAX_LIMIT = 500


class _Digits(Convertor[str]):
    """A path segment of ASCII digits, kept as text: FastAPI validates the number (range: a 422), and
    every path parameter stays a string for api.guards.plain_parameters (Starlette's ``int`` would not)."""

    regex = "[0-9]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("digits", _Digits())
DeadLetterId = Annotated[int, Field(ge=1, le=MAX_ID)]
Plain = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(plain_id)]
# RFC 3339 with its offset, as text: pydantic's lax datetime would also take a number (1970 + seconds).
RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"
Time = Annotated[str, StringConstraints(pattern=RFC3339)]


class DeadLetterItem(BaseModel):
    """A dead letter without its payload: ids, why it was given up on, and its replay history."""

    id: int
    event_id: str | None = Field(description="Null for a malformed message that carried no usable id.")
    product_id: str | None
    event_status: str | None = Field(description="The event's status now: 'dead', 'received' (replayed, "
                                     "not yet tagged), 'tagged' (replayed or another copy succeeded); "
                                     "null: no event row.")
    reason: str = Field(description="Why it was given up on: an error kind or 'field: reason'.")
    attempts: int
    created_at: datetime
    replayed_at: datetime | None = Field(description="When it was last replayed; null: never.")
    replays: int


class DeadLetterPage(BaseModel):
    """Newest first; pass ``next_cursor`` as ``cursor`` for the next page (null: done)."""

    items: list[DeadLetterItem]
    next_cursor: str | None


class DeadLetterDetail(DeadLetterItem):
    """One dead letter with the message as stored (private: seller titles and URIs; admins only)."""

    payload: Any = Field(description="The stored message as JSON (a string if it is not JSON).")
    replayable: bool
    problems: list[str] = Field(description="Why it is not replayable, as 'field: reason' lines.")


class ReplayFilter(BaseModel):
    """Select dead letters like the list's query parameters."""

    model_config = ConfigDict(extra="forbid", strict=True)  # no lax coercion: 0 is not false

    reason: Plain | None = Field(None, description="Case-insensitive substring of the reason.")
    since: Time | None = Field(None, description="Created at or after (RFC 3339, with offset).")
    until: Time | None = Field(None, description="Created before (RFC 3339, with offset).")
    product_id: Plain | None = None
    event_id: Plain | None = None
    replayed: bool | None = Field(None, description="true: only replayed ones; false: never replayed.")


class ReplayRequest(BaseModel):
    """Which dead letters to replay: ``ids``, or ``filter`` (paged by ``after_id`` and ``limit``)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # no lax coercion: 0 is not false

    ids: list[DeadLetterId] | None = Field(None, min_length=1, max_length=MAX_LIMIT)
    filter: ReplayFilter | None = None
    after_id: DeadLetterId | None = Field(None, description="With filter: only ids above this one (the "
                                          "previous answer's next_after_id).")
    limit: int = Field(100, ge=1, le=MAX_LIMIT, description="With filter: dead letters examined per call.")
    force: bool = Field(False, description="Replay ones already replayed too (never an event already "
                        "tagged).")
    dry_run: bool = Field(False, description="Say what would be replayed; change and send nothing.")


class ReplayOutcome(BaseModel):
    """What happened to one dead letter."""

    id: int
    event_id: str | None
    action: Literal["replayed", "would_replay", "skipped"]
    skipped: Literal[SKIP_REASONS] | None = Field(  # type: ignore[valid-type]
        None, description="Why it was not replayed: not_found, not_replayable (see errors), "
        "already_replayed (use force), already_tagged (another copy succeeded: never re-sent), duplicate "
        "(the same event, replayed by another dead letter of this request).")
    errors: list[str] = Field(default_factory=list, description="not_replayable: 'field: reason' lines.")


class ReplayResult(BaseModel):
    """Per dead letter, in id order; ``queued`` false: replayed events are recorded as received and the
    sweeper sends them once the broker is back."""

    outcomes: list[ReplayOutcome]
    replayed: int
    skipped: int
    queued: bool
    dry_run: bool
    next_after_id: int | None = Field(description="With filter: pass as after_id for the next part "
                                      "(null: done).")


def _utc(name: str, value: str | None) -> datetime | None:
    """The time in UTC; not a date-time, or one that overflows once moved to UTC, is a 422 naming it."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        raise InvalidParameter(f"{name}: not a valid date-time (RFC 3339 with offset, e.g. "
                               "2026-01-31T00:00:00Z)", parameter=name) from None
    except OverflowError:
        raise InvalidParameter(f"{name}: out of range once converted to UTC", parameter=name) from None


def _item(s: Summary) -> dict[str, Any]:
    return {"id": s.id, "event_id": s.event_id, "product_id": s.product_id, "event_status": s.event_status,
            "reason": s.reason, "attempts": s.attempts, "created_at": s.created_at,
            "replayed_at": s.replayed_at, "replays": s.replays}


def _before_key(after: Any) -> int:
    if isinstance(after, bool) or not isinstance(after, int) or not 1 <= after <= MAX_ID:
        raise NotAKey(after)
    return after


@router.get("/dead-letters", response_model=DeadLetterPage,
            responses=responses((400, "The cursor was not one this API handed out."), *AUTH_ERRORS, 422))
def list_dead_letters(
    request: Request,
    reason: Annotated[str | None, Query(max_length=200,
                                        description="Case-insensitive substring of the reason.")] = None,
    since: Annotated[str | None, Query(pattern=RFC3339,
                                       description="Created at or after (RFC 3339, with offset).")] = None,
    until: Annotated[str | None, Query(pattern=RFC3339,
                                       description="Created before (RFC 3339, with offset).")] = None,
    product_id: Annotated[str | None, Query(max_length=200)] = None,
    event_id: Annotated[str | None, Query(max_length=200)] = None,
    replayed: Annotated[bool | None, Query(description="true: only replayed; false: never replayed.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> DeadLetterPage:
    """Dead letters matching every filter given, newest first, without payloads."""
    before = decode_cursor(cursor, _before_key) if cursor is not None else None
    filters = Filters(reason=reason, since=_utc("since", since), until=_utc("until", until),
                      product_id=product_id, event_id=event_id, replayed=replayed)
    with session_scope(get_state(request).settings.database_url) as session:
        rows = store.list_dead_letters(session, filters, before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return DeadLetterPage(items=[DeadLetterItem(**_item(r)) for r in rows],
                          next_cursor=encode_cursor(rows[-1].id) if more else None)


@router.post(
    "/dead-letters/replay", response_model=ReplayResult,
    responses=responses(
        (400, "The body is not valid JSON, or nests too deep or holds a number out of range."),
        *AUTH_ERRORS, (413, "The body is over TAGGER_API_MAX_BODY_BYTES (``limit`` names it)."),
        (422, "The body names neither ids nor a filter, or both, or a field is invalid."),
    ),
)
async def replay_dead_letters(request: Request, body: ReplayRequest) -> ReplayResult:
    """Replay dead letters through the normal path: the event's row becomes 'received' (attempts 0),
    it is published and marked enqueued. Idempotent: one already replayed is skipped unless ``force``,
    an event already tagged is never re-sent. With ``filter``, at most ``limit`` dead letters (by id,
    ascending, above ``after_id``) are examined per call."""
    if (body.ids is None) == (body.filter is None):
        raise InvalidParameter("give either 'ids' or 'filter'", parameter="body")
    state = get_state(request)
    next_after: int | None = None
    if body.ids is not None:
        ids = list(body.ids)
    else:
        f = body.filter
        assert f is not None
        filters = Filters(reason=f.reason, since=_utc("filter.since", f.since),
                          until=_utc("filter.until", f.until), product_id=f.product_id,
                          event_id=f.event_id, replayed=f.replayed)

        def select() -> list[int]:
            with session_scope(state.settings.database_url) as session:
                return store.matching_ids(session, filters, after=body.after_id, limit=body.limit + 1)

        ids = await run_in_threadpool(select)
        if len(ids) > body.limit:
            ids = ids[:body.limit]
            next_after = ids[-1]
    report = await run_in_threadpool(store.replay, state.settings.database_url, state.publisher, ids,
                                     force=body.force, dry_run=body.dry_run, settings=state.settings)
    outcomes = [ReplayOutcome(id=o.id, event_id=o.event_id, skipped=o.skipped, errors=list(o.errors),
                              action="skipped" if not o.replayed else
                              "would_replay" if body.dry_run else "replayed")
                for o in report.outcomes]
    principal: Principal = request.state.principal  # set by the router's require("admin")
    log.info("dead_letters_replay key=%s replayed=%d skipped=%d dry_run=%s queued=%s", principal.key_id,
             len(report.replayed), len(report.skipped), body.dry_run, report.queued)
    return ReplayResult(outcomes=outcomes, replayed=len(report.replayed), skipped=len(report.skipped),
                        queued=report.queued, dry_run=body.dry_run, next_after_id=next_after)


# {dead_letter_id:digits}: "replay" is never an id, so GET /v1/dead-letters/replay is a 405 naming POST
# (and this route comes after the replay route, so OPTIONS there names POST too).
@router.get("/dead-letters/{dead_letter_id:digits}", response_model=DeadLetterDetail,
            responses=responses(*AUTH_ERRORS, (404, "No dead letter with this id."), 422))
def show_dead_letter(
    request: Request, dead_letter_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> DeadLetterDetail:
    """One dead letter with its stored message and whether it can be replayed as it stands."""
    state = get_state(request)
    with session_scope(state.settings.database_url) as session:
        detail = store.get_dead_letter(session, dead_letter_id, state.settings)
    if detail is None:
        raise NotFound(f"no dead letter {dead_letter_id}")
    return DeadLetterDetail(**_item(detail.summary), payload=detail.payload_document(),
                            replayable=not detail.problems, problems=list(detail.problems))
