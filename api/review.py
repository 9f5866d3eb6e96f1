"""Review for the catalogue team: the queue of audit and uncertain model tags, and a person's decisions
on them. Role ``reviewer`` (or admin).

A decision is stored as a human label (``source='human'``) that retraining uses and the model never
overwrites; once a product has a human decision on an axis it leaves the queue for that axis. A
decision on an audit or paused tag also re-judges that value's live switch in the same transaction
(:mod:`shared.audit`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple, cast

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, aliased

from api.auth import require
from api.errors import AUTH_ERRORS, InvalidParameter, NotFound, responses
from api.guards import GuardedRoute
from api.paging import NotAKey, decode_cursor, encode_cursor
from api.reads import TagEvidence
from api.reads import taxonomy as served_taxonomy
from api.state import get_state
from shared.audit import after_decisions, is_audit_row
from shared.db.models import Product, ProductTag
from shared.db.session import session_scope
from shared.events import Text
from shared.labels.decisions import LabelError, ProductNotFound, decide

log = logging.getLogger("tagger.api.review")
router = APIRouter(prefix="/v1", tags=["review"], route_class=GuardedRoute,
                   dependencies=[Depends(require("reviewer"))])

MAX_LIMIT = 500
CANDIDATES = 3
MAX_DECISIONS = 50


class Candidate(BaseModel):
    """One value the model proposed on the item's axis."""

    value: str
    score: float
    reason: str | None = Field(
        None, description="Why this value is here beyond its score: 'audit' (the model applied it; a "
        "sample a person checks), 'paused' (its score would have applied it, but the live audit switched "
        "the value off), 'out_of_domain', 'contradiction', 'disagreement' or 'one_input' (held back); "
        "null: the score alone.")


class ReviewItem(BaseModel):
    """A product's axis awaiting a person: the model's best review candidates, highest score first."""

    product_id: str
    title: str
    image_uri: str | None
    axis: str
    candidates: list[Candidate]
    model_version: str | None
    evidence: TagEvidence | None = Field(
        None, description="Why the model proposed these values: the share of title and photo, and, "
        "when the product had both, what each alone would have said (they may disagree).")
    audit: bool = Field(
        False, description="An audit item: its candidates include a tag the model applied (reason "
        "'audit') or would have applied but for a switched-off value (reason 'paused'). Decisions on "
        "these measure the live precision behind the switches (GET /v1/audit).")


class ReviewPage(BaseModel):
    """Audit items first (most recent first), then uncertain ones (most uncertain first); pass
    ``next_cursor`` as ``cursor`` for the next page (null: done)."""

    items: list[ReviewItem]
    next_cursor: str | None


class Decision(BaseModel):
    """A person's decision on one tag: confirm or reject ``value``, or correct it to ``corrected_value``."""

    model_config = ConfigDict(extra="forbid")

    axis: Text  # Text: no NUL or lone surrogate, which the database would refuse with a 500
    action: Literal["confirm", "reject", "correct"]
    value: Text
    corrected_value: Text | None = None


class Decisions(BaseModel):
    """Decisions on one product, applied together or not at all."""

    model_config = ConfigDict(extra="forbid")

    decisions: list[Decision] = Field(min_length=1, max_length=MAX_DECISIONS)


class Change(BaseModel):
    """A tag row the decisions changed, with its new status."""

    axis: str
    value: str
    status: str


class DecisionResult(BaseModel):
    product_id: str
    changed: list[Change]


# --- cursor ----------------------------------------------------------------------------------------

_Key = tuple[float, str, str]  # an uncertain item: (best review score, product_id, axis)
_AuditKey = tuple[datetime, str, str]  # an audit item: (its newest audit/paused row, product_id, axis)
AUDIT_MARK = "audit"


def _queue_key(after: Any) -> _Key | _AuditKey:
    """This route's cursor key (wire format in api.paging) of a page's last item: ["audit", time,
    product_id, axis] in the audit part of the queue, [score, product_id, axis] in the uncertain part."""
    if isinstance(after, list) and len(after) == 4 and after[0] == AUDIT_MARK and all(
            isinstance(part, str) for part in after[1:]):
        try:
            at = datetime.fromisoformat(after[1])
            # In UTC: Postgres refuses offsets past 15:59 (a 500), and year 1 or 9999 overflow here.
            at = at.astimezone(UTC) if at.tzinfo is not None else None
        except (ValueError, OverflowError):
            raise NotAKey(after) from None
        if at is None:
            raise NotAKey(after)
        return at, after[2], after[3]
    if (not isinstance(after, list) or len(after) != 3
            or not isinstance(after[0], int | float) or isinstance(after[0], bool)
            or not isinstance(after[1], str) or not isinstance(after[2], str)):
        raise NotAKey(after)
    return float(after[0]), after[1], after[2]


class _Row(NamedTuple):
    product_id: str
    axis: str
    title: str
    image_uri: str | None
    audit: bool
    cursor: list[Any]


# --- GET /v1/review ----------------------------------------------------------------------------------


def _undecided() -> sa.Exists:
    """A person already decided on this row's (product, axis): it is out of the queue."""
    human = aliased(ProductTag)
    return sa.exists().where(human.product_id == ProductTag.product_id, human.axis == ProductTag.axis,
                             human.source == "human")


def _audit_query(axis: str | None) -> sa.Subquery:
    """(product_id, axis, at): each undecided (product, axis) with an audit or paused model tag, and
    when the newest of them was written."""
    query = (
        sa.select(ProductTag.product_id, ProductTag.axis, sa.func.max(ProductTag.updated_at).label("at"))
        .where(ProductTag.source == "model", is_audit_row(ProductTag.reason), ~_undecided())
        .group_by(ProductTag.product_id, ProductTag.axis)
    )
    if axis is not None:
        query = query.where(ProductTag.axis == axis)
    return query.subquery("audit_queue")


def _queue_query(axis: str | None, multi: frozenset[str] = frozenset()) -> sa.Subquery:
    """(product_id, axis, top): each undecided (product, axis) with review tags and its best review score.

    On a single-label axis whose top value the model already applied (``auto``), the other
    ``review`` rows are just the runners-up of a sure answer (often scored ~0): that axis is not
    uncertain and stays out of the queue. On a multi-label axis (``multi``) every value stands alone.
    A pair with an audit or paused tag is an audit item instead (:func:`_audit_query`).
    """
    applied, flagged = aliased(ProductTag), aliased(ProductTag)
    settled = sa.exists().where(applied.product_id == ProductTag.product_id, applied.axis == ProductTag.axis,
                                applied.source == "model", applied.status == "auto")
    if multi:
        settled = sa.and_(settled, ProductTag.axis.not_in(sorted(multi)))
    audited = sa.exists().where(flagged.product_id == ProductTag.product_id, flagged.axis == ProductTag.axis,
                                flagged.source == "model", is_audit_row(flagged.reason))
    query = (
        sa.select(ProductTag.product_id, ProductTag.axis, sa.func.max(ProductTag.score).label("top"))
        .where(ProductTag.source == "model", ProductTag.status == "review", ~_undecided(), ~settled,
               ~audited)
        .group_by(ProductTag.product_id, ProductTag.axis)
    )
    if axis is not None:
        query = query.where(ProductTag.axis == axis)
    return query.subquery("queue")


def _audit_rows(session: Session, axis: str | None, after: _AuditKey | None, n: int) -> list[_Row]:
    """Up to ``n`` audit items after ``after``, most recent first."""
    queue = _audit_query(axis)
    query = (sa.select(queue.c.product_id, queue.c.axis, queue.c.at, Product.title, Product.image_uri)
             .join(Product, Product.product_id == queue.c.product_id))
    if after is not None:
        at, product_id, item_axis = after
        later = sa.tuple_(queue.c.product_id, queue.c.axis) > sa.tuple_(product_id, item_axis)
        query = query.where(sa.or_(queue.c.at < at, sa.and_(queue.c.at == at, later)))
    query = query.order_by(queue.c.at.desc(), queue.c.product_id, queue.c.axis).limit(n)
    return [_Row(r.product_id, r.axis, r.title, r.image_uri, True,
                 [AUDIT_MARK, r.at.isoformat(), r.product_id, r.axis]) for r in session.execute(query)]


def _uncertain_rows(session: Session, axis: str | None, multi: frozenset[str], after: _Key | None,
                    n: int) -> list[_Row]:
    """Up to ``n`` uncertain items after ``after``, lowest best score first."""
    queue = _queue_query(axis, multi)
    query = (sa.select(queue.c.product_id, queue.c.axis, queue.c.top, Product.title, Product.image_uri)
             .join(Product, Product.product_id == queue.c.product_id))
    if after is not None:
        query = query.where(sa.tuple_(queue.c.top, queue.c.product_id, queue.c.axis) > sa.tuple_(*after))
    query = query.order_by(queue.c.top, queue.c.product_id, queue.c.axis).limit(n)
    return [_Row(r.product_id, r.axis, r.title, r.image_uri, False, [r.top, r.product_id, r.axis])
            for r in session.execute(query)]


@router.get("/review", response_model=ReviewPage,
            responses=responses((400, "The cursor was not one this API handed out."), *AUTH_ERRORS, 422))
def review_queue(
    request: Request,
    axis: Annotated[str | None, Query(description="Only items on this axis.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> ReviewPage:
    """Undecided (product, axis) pairs in two parts. First the audit items: pairs with a tag the model
    applied and sampled for audit (reason 'audit') or held back because its value is switched off
    (reason 'paused'), most recent first (ordered by their newest such tag, descending, then
    product_id, axis); they are few and their decisions drive the live switches, so they must not
    wait behind a long queue. Then the uncertain items: pairs with model tags in ``review`` and
    (single-label axes) no value the model applied, most uncertain first (by the best review score
    of the pair, ascending, then product_id, axis)."""
    after = decode_cursor(cursor, _queue_key) if cursor is not None else None
    multi = multi_label_axes(request)
    in_audit = after is None or isinstance(after[0], datetime)  # else the audit part is done
    with session_scope(get_state(request).settings.database_url) as session:
        rows = _audit_rows(session, axis, cast(_AuditKey | None, after), limit + 1) if in_audit else []
        if len(rows) <= limit:
            rows += _uncertain_rows(session, axis, multi, None if in_audit else cast(_Key, after),
                                    limit + 1 - len(rows))
        more = len(rows) > limit
        rows = rows[:limit]
        tags: dict[tuple[str, str], list[ProductTag]] = {}
        if rows:
            candidates = session.scalars(
                sa.select(ProductTag).where(
                    ProductTag.product_id.in_(sorted({r.product_id for r in rows})),
                    ProductTag.source == "model",
                    sa.or_(ProductTag.status == "review", is_audit_row(ProductTag.reason)),
                ).order_by(ProductTag.score.desc(), ProductTag.value)
            )
            for tag in candidates:
                tags.setdefault((tag.product_id, tag.axis), []).append(tag)
        items = []
        for row in rows:
            best = tags.get((row.product_id, row.axis), [])[:CANDIDATES]
            items.append(ReviewItem(
                product_id=row.product_id, title=row.title, image_uri=row.image_uri, axis=row.axis,
                candidates=[Candidate(value=t.value, score=t.score, reason=t.reason) for t in best],
                model_version=best[0].model_version if best else None, audit=row.audit,
                evidence=best[0].evidence if best else None,
            ))
    next_cursor = encode_cursor(rows[-1].cursor) if more else None
    return ReviewPage(items=items, next_cursor=next_cursor)


# --- POST /v1/products/{product_id}/decisions --------------------------------------------------------


def multi_label_axes(request: Request) -> frozenset[str]:
    """The axes the served model (live registry version, else the shipped one) calls ``multi``.

    The same cached taxonomy ``GET /v1/taxonomy`` answers with, so a decision and the taxonomy a
    client reads always agree on an axis's kind.
    """
    axes = served_taxonomy(request)["axes"]
    return frozenset(name for name, axis in axes.items() if axis["kind"] == "multi")


@router.post(
    "/products/{product_id}/decisions", response_model=DecisionResult,
    responses=responses(
        (400, "The body is not valid JSON, or nests too deep or holds a number out of range."),
        *AUTH_ERRORS, (404, "No product with this id."),
        (413, "The body is over TAGGER_API_MAX_BODY_BYTES (``limit`` names it)."),
        (422, "A decision cannot be stored (the answer names its index; nothing is applied), "
              "or the body is not a list of decisions, or product_id holds a control character."),
        (500, "The served model's manifest (axis kinds) is missing or unreadable."),
    ),
)
def post_decisions(request: Request, product_id: str, body: Decisions) -> DecisionResult:
    """Apply every decision in one transaction: all of them, or (on any error) none.

    On a multi-label axis of the served model a confirmation leaves the product's other confirmed
    values on the axis alone; on a single-label axis (or one the model does not know) it rejects them.
    A decision on an audit or paused tag re-judges its value's live switch in the same transaction
    (GET /v1/audit shows the result).
    """
    multi = multi_label_axes(request)
    changed: list[Change] = []
    with session_scope(get_state(request).settings.database_url) as session:
        for index, d in enumerate(body.decisions):
            try:
                changes = decide(session, product_id, d.axis, d.value, d.action, d.corrected_value,
                                 multi=d.axis.strip() in multi)
            except ProductNotFound as exc:
                raise NotFound(str(exc)) from None
            except LabelError as exc:
                raise InvalidParameter(f"decisions[{index}]: {exc}; nothing was applied",
                                       parameter=f"decisions[{index}]", index=index) from None
            changed.extend(Change(axis=d.axis.strip(), value=v, status=s) for v, s in changes.items())
        settings = get_state(request).settings  # decisions on audit/paused tags re-judge their switches
        after_decisions(session, product_id, [(c.axis, c.value) for c in changed],
                        target=settings.target_precision, window=settings.audit_window)
    log.info("decisions_applied product=%s decisions=%d changed=%d",
             product_id, len(body.decisions), len(changed))
    return DecisionResult(product_id=product_id, changed=changed)
