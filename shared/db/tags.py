"""Writes and reads of tags: the batch upsert behind "exactly-once effect under at-least-once delivery".

Every helper takes the session first and never commits: the task that owns the batch commits once,
then acks, so a redelivered batch re-applies to the same rows and changes nothing more. The batch's
event rows are written through :mod:`shared.db.events`, the one writer of ``tagging_events``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.events import upsert_events
from shared.db.models import HUMAN_TAG_STATUSES, MODEL_TAG_STATUSES, REVIEW_REASONS, Product, ProductTag
from shared.db.sql import chunks, copy_select, dialect_insert, keys_as_array, set_based, unnest_select

_products = cast(sa.Table, Product.__table__)
_tags = cast(sa.Table, ProductTag.__table__)
_TAG_KEY = [_tags.c.product_id, _tags.c.axis, _tags.c.value]  # a product's one row per (axis, value)


class ModelTag(NamedTuple):
    """One tag the model proposes: ``status`` is ``auto`` (applied) or ``review``; ``reason`` says why
    a ``review`` tag was held back beyond its score (one of REVIEW_REASONS), None when the score did;
    ``evidence`` says why the model named it (input shares, single-input values; migration 0005)."""

    axis: str
    value: str
    score: float
    status: str
    reason: str | None = None
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TaggingResult:
    """The outcome of one event, ready to write; validated here so a bad item fails before the batch."""

    event_id: str
    product_id: str
    seller_id: str
    title: str
    description: str | None
    image_uri: str | None
    locale: str | None
    occurred_at: datetime
    content_hash: str
    model_version: str | None
    tags: Sequence[tuple[str, str, float, str]] = ()
    status: str = "tagged"  # or "failed": only the event row is written, the product is left alone
    error: str | None = None
    image_error: str | None = None  # the image failed but the text still gave tags
    attempts: int = 1
    novelty: float | None = None  # the model's out-of-domain score (>= 1: nothing auto-applied)
    novelty_reason: str | None = None

    def __post_init__(self) -> None:
        if self.status not in ("tagged", "failed"):
            raise ValueError(f"event {self.event_id}: status must be tagged or failed, not {self.status!r}")
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset() is None:
            raise ValueError(f"event {self.event_id}: occurred_at must be timezone-aware")
        if self.attempts < 0:
            raise ValueError(f"event {self.event_id}: attempts must be >= 0")
        tags = tuple(ModelTag(*tag) for tag in self.tags)
        for tag in tags:
            if tag.status not in MODEL_TAG_STATUSES:
                raise ValueError(f"event {self.event_id}: tag status {tag.status!r} is not auto or review")
            if not math.isfinite(tag.score):
                raise ValueError(f"event {self.event_id}: tag {tag.axis}={tag.value} has score {tag.score}")
            if tag.reason is not None and tag.reason not in REVIEW_REASONS:
                raise ValueError(f"event {self.event_id}: tag reason {tag.reason!r} is not one of "
                                 f"{', '.join(REVIEW_REASONS)}")
        if self.novelty is not None and not math.isfinite(self.novelty):
            raise ValueError(f"event {self.event_id}: novelty is {self.novelty}")
        object.__setattr__(self, "tags", tags)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What a batch changed, for the batch's log line: products written, events stale or failed."""

    applied: tuple[str, ...]
    stale: tuple[str, ...]
    failed: tuple[str, ...]


def product_content_hash(title: str, description: str | None, image_uri: str | None) -> str:
    """What a product's content is, for every writer alike: a re-upload with the same title,
    description and photo is the same content."""
    return hashlib.sha256(json.dumps([title, description, image_uri]).encode()).hexdigest()


def _dedupe_events(results: Sequence[TaggingResult]) -> list[TaggingResult]:
    """One result per event_id, sorted: prefer a success, then more attempts, then the later copy."""
    best: dict[str, tuple[tuple[bool, int, int], TaggingResult]] = {}
    for index, result in enumerate(results):
        rank = (result.status == "tagged", result.attempts, index)
        current = best.get(result.event_id)
        if current is None or rank > current[0]:
            best[result.event_id] = (rank, result)
    return [best[event_id][1] for event_id in sorted(best)]


def _latest_per_product(results: Iterable[TaggingResult]) -> dict[str, TaggingResult]:
    """The newest upload of each product in the batch; ties broken by event_id so order never matters."""
    latest: dict[str, TaggingResult] = {}
    for result in results:
        current = latest.get(result.product_id)
        if current is None or (result.occurred_at, result.event_id) > (current.occurred_at, current.event_id):
            latest[result.product_id] = result
    return latest


def _upsert_products(session: Session, results: Sequence[TaggingResult], now: datetime) -> set[str]:
    """Insert or update products; an update only lands when the upload is not older than the stored one.

    Returns the product ids written. The row lock the upsert takes also serialises the tag
    replacement that follows, so two workers on one product cannot interleave their tags.
    """
    if not results:
        return set()
    rows = [
        {"product_id": r.product_id, "seller_id": r.seller_id, "title": r.title,
         "description": r.description, "image_uri": r.image_uri, "locale": r.locale,
         "content_hash": r.content_hash, "last_event_at": r.occurred_at,
         "model_version": r.model_version, "novelty": r.novelty, "novelty_reason": r.novelty_reason,
         "created_at": now, "updated_at": now}
        for r in sorted(results, key=lambda r: r.product_id)
    ]
    as_arrays = set_based(session, rows, ["product_id"])
    stmt = dialect_insert(session, _products)
    if as_arrays:
        columns = list(rows[0])
        stmt = postgresql.insert(_products).from_select(columns, unnest_select(_products, rows, columns))
    excluded = stmt.excluded
    updated = ("seller_id", "title", "description", "image_uri", "locale", "content_hash",
               "last_event_at", "model_version", "novelty", "novelty_reason", "updated_at")
    stmt = stmt.on_conflict_do_update(
        index_elements=[_products.c.product_id],
        set_={name: excluded[name] for name in updated},
        # Equal times re-apply (a redelivery writes the same values again); older ones are stale.
        where=_products.c.last_event_at <= excluded.last_event_at,
    ).returning(_products.c.product_id)
    if as_arrays:
        return set(session.execute(stmt).scalars())
    return set(session.execute(stmt, rows).scalars())


def _replace_model_tags(session: Session, results: Sequence[TaggingResult], now: datetime) -> None:
    """Replace the products' model tags with the new ones; human rows are neither touched nor shadowed."""
    product_ids = sorted(r.product_id for r in results)
    if keys_as_array(session):
        session.execute(_delete_model_tags_statement(), {"keys": product_ids})
    else:
        for chunk in chunks(product_ids):
            session.execute(
                sa.delete(_tags).where(_tags.c.product_id.in_(chunk), _tags.c.source == "model")
            )
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for result in results:
        for tag in cast(tuple[ModelTag, ...], result.tags):
            key = (result.product_id, tag.axis, tag.value)
            if key in rows and rows[key]["score"] >= tag.score:
                continue  # the model named the same tag twice: keep the higher score
            rows[key] = {"product_id": result.product_id, "axis": tag.axis, "value": tag.value,
                         "score": float(tag.score), "status": tag.status, "source": "model",
                         "model_version": result.model_version, "reason": tag.reason,
                         "evidence": tag.evidence, "updated_at": now}
    if not rows:
        return
    ordered = [rows[key] for key in sorted(rows)]
    # After the delete only human rows can conflict, and a human decision always wins.
    if set_based(session, ordered, ["product_id", "axis", "value"]):  # the batch's tags, one statement
        columns = tuple(ordered[0])
        session.execute(_insert_staged_tags_statement(copy_select(session, _tags, ordered, columns), columns))
        return
    session.execute(dialect_insert(session, _tags).on_conflict_do_nothing(index_elements=_TAG_KEY), ordered)


@functools.cache
def _delete_model_tags_statement() -> sa.Delete:
    """Postgres: the model's tags of every product in :keys (one array), built once."""
    keys = sa.bindparam("keys", type_=postgresql.ARRAY(sa.Text))
    return sa.delete(_tags).where(_tags.c.product_id == sa.any_(keys), _tags.c.source == "model")


@functools.cache
def _insert_staged_tags_statement(staged: sa.Select, columns: tuple[str, ...]) -> sa.Insert:
    """INSERT the staged tag rows, a human row winning any conflict: built once per staging SELECT
    (:func:`shared.db.sql.copy_select` returns the same object for the same shape)."""
    return (postgresql.insert(_tags).from_select(list(columns), staged)
            .on_conflict_do_nothing(index_elements=_TAG_KEY))


def apply_batch(session: Session, results: Sequence[TaggingResult]) -> BatchOutcome:
    """Write a batch's effects (products, model tags, event rows); idempotent, never commits.

    Re-applying the same results leaves the same rows. A result older than the product's stored
    upload is stale: its event is recorded as tagged and nothing else changes. A failed result
    only records its event. Rows are de-duplicated and written in key order (deadlock avoidance).
    """
    if not results:
        return BatchOutcome(applied=(), stale=(), failed=())
    now = utcnow()
    events = _dedupe_events(results)
    tagged = [r for r in events if r.status == "tagged"]
    latest = _latest_per_product(tagged)
    written = _upsert_products(session, list(latest.values()), now)
    _replace_model_tags(session, [latest[product_id] for product_id in sorted(written)], now)
    finished = utcnow()  # after the tag writes: the last statement before the caller commits
    upsert_events(session, [
        {"event_id": r.event_id, "product_id": r.product_id, "status": r.status, "attempts": r.attempts,
         "last_error": r.error, "image_error": r.image_error, "model_version": r.model_version,
         "received_at": now, "finished_at": finished}
        for r in events
    ])
    return BatchOutcome(
        applied=tuple(sorted(written)),
        stale=tuple(r.event_id for r in tagged
                    if r.product_id not in written or latest[r.product_id] is not r),
        failed=tuple(r.event_id for r in events if r.status == "failed"),
    )


def record_human_decision(
    session: Session, product_id: str, axis: str, value: str, status: str, *, score: float | None = None
) -> None:
    """Store a person's confirmed/rejected decision on a tag; the model never overwrites it afterwards."""
    if status not in HUMAN_TAG_STATUSES:
        raise ValueError(f"a human decision is confirmed or rejected, not {status!r}")
    now = utcnow()
    stmt = dialect_insert(session, _tags).values(
        product_id=product_id, axis=axis, value=value, status=status, source="human",
        score=score if score is not None else (1.0 if status == "confirmed" else 0.0), updated_at=now,
    )
    excluded = stmt.excluded
    set_: dict[str, Any] = {
        "status": excluded.status, "source": excluded.source, "updated_at": excluded.updated_at
    }
    if score is not None:  # otherwise keep the model's score: it is still what the model believed
        set_["score"] = excluded.score
    session.execute(stmt.on_conflict_do_update(
        index_elements=[_tags.c.product_id, _tags.c.axis, _tags.c.value], set_=set_
    ))


def tags_for_product(session: Session, product_id: str) -> list[ProductTag]:
    """Every tag row of one product (model and human), ordered by axis and value."""
    return list(session.scalars(
        sa.select(ProductTag).where(ProductTag.product_id == product_id)
        .order_by(ProductTag.axis, ProductTag.value)
    ))


def products_with_tag(
    session: Session, axis: str, value: str, *, statuses: Sequence[str] = ("auto", "confirmed"),
    limit: int = 100, after: str | None = None,
) -> list[str]:
    """Product ids carrying a tag in the given statuses, by id; page with ``after`` (keyset)."""
    query = sa.select(ProductTag.product_id).where(
        ProductTag.axis == axis, ProductTag.value == value, ProductTag.status.in_(list(statuses))
    )
    if after is not None:
        query = query.where(ProductTag.product_id > after)
    return list(session.scalars(query.order_by(ProductTag.product_id).limit(limit)))
