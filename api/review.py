"""Review for the catalogue team: the queue of uncertain model tags, and a person's decisions on them.
Role ``reviewer`` (or admin).

A decision is stored as a human label (``source='human'``) that retraining uses and the model never
overwrites; once a product has a human decision on an axis it leaves the queue for that axis.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import aliased

from api.auth import require
from api.errors import AUTH_ERRORS, InvalidParameter, NotFound, responses
from api.paging import NotAKey, decode_cursor, encode_cursor
from api.reads import taxonomy as served_taxonomy
from api.state import get_state
from shared.db.models import Product, ProductTag
from shared.db.session import session_scope
from shared.labels.decisions import LabelError, ProductNotFound, decide

log = logging.getLogger("tagger.api.review")
router = APIRouter(prefix="/v1", tags=["review"], dependencies=[Depends(require("reviewer"))])

MAX_LIMIT = 500
CANDIDATES = 3
MAX_DECISIONS = 50


class Candidate(BaseModel):
    """One value the model proposed for review on the item's axis."""

    value: str
    score: float


class ReviewItem(BaseModel):
    """A product's axis awaiting a person: the model's best review candidates, highest score first."""

    product_id: str
    title: str
    image_uri: str | None
    axis: str
    candidates: list[Candidate]
    model_version: str | None


class ReviewPage(BaseModel):
    """Most uncertain first; pass ``next_cursor`` as ``cursor`` for the next page (null: done)."""

    items: list[ReviewItem]
    next_cursor: str | None


class Decision(BaseModel):
    """A person's decision on one tag: confirm or reject ``value``, or correct it to ``corrected_value``."""

    model_config = ConfigDict(extra="forbid")

    axis: str
    action: Literal["confirm", "reject", "correct"]
    value: str
    corrected_value: str | None = None


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

_Key = tuple[float, str, str]


def _queue_key(after: Any) -> _Key:
    """This route's cursor key (wire format in api.paging): (score, product_id, axis) of a page's
    last item."""
    if (not isinstance(after, list) or len(after) != 3
            or not isinstance(after[0], int | float) or isinstance(after[0], bool)
            or not isinstance(after[1], str) or not isinstance(after[2], str)):
        raise NotAKey(after)
    return float(after[0]), after[1], after[2]


# --- GET /v1/review ----------------------------------------------------------------------------------


def _queue_query(axis: str | None, multi: frozenset[str] = frozenset()) -> sa.Subquery:
    """(product_id, axis, top): each undecided (product, axis) with review tags and its best review score.

    On a single-label axis whose top value the model already applied (``auto``), the other
    ``review`` rows are just the runners-up of a sure answer (often scored ~0): that axis is not
    uncertain and stays out of the queue. On a multi-label axis (``multi``) every value stands alone.
    """
    human, applied = aliased(ProductTag), aliased(ProductTag)
    decided = sa.exists().where(human.product_id == ProductTag.product_id, human.axis == ProductTag.axis,
                                human.source == "human")
    settled = sa.exists().where(applied.product_id == ProductTag.product_id, applied.axis == ProductTag.axis,
                                applied.source == "model", applied.status == "auto")
    if multi:
        settled = sa.and_(settled, ProductTag.axis.not_in(sorted(multi)))
    query = (
        sa.select(ProductTag.product_id, ProductTag.axis, sa.func.max(ProductTag.score).label("top"))
        .where(ProductTag.source == "model", ProductTag.status == "review", ~decided, ~settled)
        .group_by(ProductTag.product_id, ProductTag.axis)
    )
    if axis is not None:
        query = query.where(ProductTag.axis == axis)
    return query.subquery("queue")


@router.get("/review", response_model=ReviewPage,
            responses=responses((400, "The cursor was not one this API handed out."), *AUTH_ERRORS, 422))
def review_queue(
    request: Request,
    axis: Annotated[str | None, Query(description="Only items on this axis.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> ReviewPage:
    """(product, axis) pairs with model tags in ``review``, no human decision yet and (single-label
    axes) no value the model applied, most uncertain first: ordered by the best review score of the
    pair, ascending, then product_id, axis."""
    after = decode_cursor(cursor, _queue_key) if cursor is not None else None
    queue = _queue_query(axis, multi_label_axes(request))
    query = (
        sa.select(queue.c.product_id, queue.c.axis, queue.c.top, Product.title, Product.image_uri)
        .join(Product, Product.product_id == queue.c.product_id)
    )
    if after is not None:
        query = query.where(sa.tuple_(queue.c.top, queue.c.product_id, queue.c.axis) > sa.tuple_(*after))
    query = query.order_by(queue.c.top, queue.c.product_id, queue.c.axis).limit(limit + 1)
    with session_scope(get_state(request).settings.database_url) as session:
        rows = session.execute(query).all()
        more = len(rows) > limit
        rows = rows[:limit]
        tags: dict[tuple[str, str], list[ProductTag]] = {}
        if rows:
            candidates = session.scalars(
                sa.select(ProductTag).where(
                    ProductTag.product_id.in_(sorted({r.product_id for r in rows})),
                    ProductTag.source == "model", ProductTag.status == "review",
                ).order_by(ProductTag.score.desc(), ProductTag.value)
            )
            for tag in candidates:
                tags.setdefault((tag.product_id, tag.axis), []).append(tag)
        items = []
        for row in rows:
            best = tags.get((row.product_id, row.axis), [])[:CANDIDATES]
            items.append(ReviewItem(
                product_id=row.product_id, title=row.title, image_uri=row.image_uri, axis=row.axis,
                candidates=[Candidate(value=t.value, score=t.score) for t in best],
                model_version=best[0].model_version if best else None,
            ))
    next_cursor = encode_cursor([rows[-1].top, rows[-1].product_id, rows[-1].axis]) if more else None
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
        (400, "The body is not valid JSON."), *AUTH_ERRORS, (404, "No product with this id."),
        (422, "A decision cannot be stored (the answer names its index; nothing is applied), "
              "or the body is not a list of decisions."),
        (500, "The served model's manifest (axis kinds) is missing or unreadable."),
    ),
)
def post_decisions(request: Request, product_id: str, body: Decisions) -> DecisionResult:
    """Apply every decision in one transaction: all of them, or (on any error) none.

    On a multi-label axis of the served model a confirmation leaves the product's other confirmed
    values on the axis alone; on a single-label axis (or one the model does not know) it rejects them.
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
    log.info("decisions_applied product=%s decisions=%d changed=%d",
             product_id, len(body.decisions), len(changed))
    return DecisionResult(product_id=product_id, changed=changed)
