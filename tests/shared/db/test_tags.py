"""apply_batch has an exactly-once effect: redeliveries, stale uploads and human decisions change nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from shared.db.models import ModelVersion, Product, ProductTag, TaggingEvent
from shared.db.tags import (
    BatchOutcome,
    TaggingResult,
    apply_batch,
    products_with_tag,
    record_human_decision,
    tags_for_product,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
SHOE_TAGS = (("colour", "navy", 0.97, "auto"), ("type", "shoes", 0.62, "review"))


def result(event_id: str = "e1", product_id: str = "p1", **changes: Any) -> TaggingResult:
    base = TaggingResult(
        event_id=event_id, product_id=product_id, seller_id="s1", title="Nike Men Navy Blue Running Shoes",
        description="Lightweight mesh upper", image_uri="s3://images/p1.jpg", locale="en-GB",
        occurred_at=T0, content_hash="h-shoes", model_version="v1", tags=SHOE_TAGS,
    )
    return replace(base, **changes)


def tags(session: Session, product_id: str = "p1") -> set[tuple[str, str, str, str]]:
    rows = session.execute(
        sa.select(ProductTag.axis, ProductTag.value, ProductTag.status, ProductTag.source)
        .where(ProductTag.product_id == product_id)
    )
    return {tuple(row) for row in rows}  # type: ignore[misc]


def product(session: Session, product_id: str = "p1") -> sa.Row[Any]:
    return session.execute(sa.select(Product.__table__).where(Product.product_id == product_id)).one()


def events(session: Session) -> dict[str, sa.Row[Any]]:
    return {row.event_id: row for row in session.execute(sa.select(TaggingEvent.__table__))}


def snapshot(session: Session) -> tuple[list[tuple[Any, ...]], ...]:
    """Every row's content, timestamps of the write left out (a re-apply may refresh them)."""
    p = Product.__table__.c
    t = ProductTag.__table__.c
    e = TaggingEvent.__table__.c
    return (
        [tuple(r) for r in session.execute(sa.select(p.product_id, p.title, p.content_hash, p.last_event_at,
                                                     p.model_version).order_by(p.product_id))],
        [tuple(r) for r in session.execute(sa.select(t.product_id, t.axis, t.value, t.score, t.status,
                                                     t.source, t.model_version).order_by(*t))],
        [tuple(r) for r in session.execute(sa.select(e.event_id, e.product_id, e.status, e.attempts,
                                                     e.last_error).order_by(e.event_id))],
    )


def test_same_batch_twice_leaves_one_set_of_rows(session: Session) -> None:
    batch = [result("e1", "p1"), result("e2", "p2", tags=[("colour", "red", 0.9, "auto")])]
    first = apply_batch(session, batch)
    session.commit()
    before = snapshot(session)

    second = apply_batch(session, batch)
    session.commit()

    assert first == second == BatchOutcome(applied=("p1", "p2"), stale=(), failed=())
    assert snapshot(session) == before
    products, tag_rows, event_rows = before
    assert [row[0] for row in products] == ["p1", "p2"]
    assert tag_rows == [
        ("p1", "colour", "navy", 0.97, "auto", "model", "v1"),
        ("p1", "type", "shoes", 0.62, "review", "model", "v1"),
        ("p2", "colour", "red", 0.9, "auto", "model", "v1"),
    ]
    assert event_rows == [("e1", "p1", "tagged", 1, None), ("e2", "p2", "tagged", 1, None)]


def test_reupload_replaces_model_tags(session: Session) -> None:
    apply_batch(session, [result("e1")])
    outcome = apply_batch(session, [result(
        "e2", occurred_at=T1, title="Nike Women Red Running Shoes", content_hash="h-red",
        model_version="v2", tags=[("colour", "red", 0.91, "auto"), ("type", "shoes", 0.88, "auto")],
    )])

    assert outcome.applied == ("p1",)
    assert tags(session) == {("colour", "red", "auto", "model"), ("type", "shoes", "auto", "model")}
    row = product(session)
    assert (row.title, row.content_hash, row.last_event_at, row.model_version) == (
        "Nike Women Red Running Shoes", "h-red", T1, "v2")
    assert session.scalar(sa.select(sa.func.count()).select_from(ProductTag)) == 2


def test_older_upload_is_stale(session: Session) -> None:
    red = [("colour", "red", 0.9, "auto")]
    apply_batch(session, [result("e2", occurred_at=T1, title="New title", tags=red)])
    outcome = apply_batch(session, [result("e1", occurred_at=T0, title="Old title"), result("e3", "p2")])

    assert outcome == BatchOutcome(applied=("p2",), stale=("e1",), failed=())
    assert product(session).title == "New title"
    assert product(session).last_event_at == T1
    assert tags(session) == {("colour", "red", "auto", "model")}
    assert events(session)["e1"].status == "tagged"


@pytest.mark.parametrize("newest_first", [True, False])
def test_newest_upload_in_a_batch_wins_whatever_the_order(session: Session, newest_first: bool) -> None:
    old = result("e1", occurred_at=T0, title="Old title")
    new = result("e2", occurred_at=T1, title="New title", tags=[("colour", "red", 0.9, "auto")])
    outcome = apply_batch(session, [new, old] if newest_first else [old, new])

    assert outcome == BatchOutcome(applied=("p1",), stale=("e1",), failed=())
    assert product(session).title == "New title"
    assert tags(session) == {("colour", "red", "auto", "model")}
    assert {e.event_id: e.status for e in events(session).values()} == {"e1": "tagged", "e2": "tagged"}


def test_human_decisions_survive_model_writes(session: Session) -> None:
    first_tags = [("colour", "navy", 0.97, "auto"), ("colour", "blue", 0.4, "review")]
    apply_batch(session, [result("e1", tags=first_tags)])
    record_human_decision(session, "p1", "colour", "navy", "confirmed")
    record_human_decision(session, "p1", "colour", "blue", "rejected")
    record_human_decision(session, "p1", "usage", "sports", "confirmed", score=1.0)

    newer = result("e2", occurred_at=T1, model_version="v2", tags=[
        ("colour", "navy", 0.99, "auto"), ("colour", "blue", 0.8, "auto"), ("type", "sneakers", 0.7, "auto"),
    ])
    apply_batch(session, [newer])
    apply_batch(session, [newer])  # redelivered

    expected = {
        ("colour", "navy", "confirmed", "human"),
        ("colour", "blue", "rejected", "human"),
        ("usage", "sports", "confirmed", "human"),
        ("type", "sneakers", "auto", "model"),
    }
    assert tags(session) == expected
    by_key = {(t.axis, t.value): t for t in tags_for_product(session, "p1")}
    assert by_key["colour", "navy"].score == 0.97  # the model's score when the person confirmed it
    assert by_key["colour", "navy"].model_version == "v1"
    assert by_key["usage", "sports"].score == 1.0


def test_duplicates_within_a_batch_do_not_raise(session: Session) -> None:
    first = result("e1", attempts=1)
    again = result("e1", attempts=2, tags=[*SHOE_TAGS, ("colour", "navy", 0.5, "review")])
    same_time = result("e0", title="Tie loses to the larger event_id")
    outcome = apply_batch(session, [first, again, first, same_time])

    assert outcome == BatchOutcome(applied=("p1",), stale=("e0",), failed=())
    assert product(session).title == "Nike Men Navy Blue Running Shoes"
    assert tags(session) == {("colour", "navy", "auto", "model"), ("type", "shoes", "review", "model")}
    assert {(e.event_id, e.attempts) for e in events(session).values()} == {("e0", 1), ("e1", 2)}


def test_failed_result_records_only_its_event(session: Session) -> None:
    failed = result("e1", status="failed", error="image fetch timed out", tags=[])
    assert apply_batch(session, [failed]).failed == ("e1",)
    assert session.scalar(sa.select(sa.func.count()).select_from(Product)) == 0
    row = events(session)["e1"]
    assert (row.status, row.last_error, row.attempts) == ("failed", "image fetch timed out", 1)

    apply_batch(session, [result("e1", attempts=2, image_error="image fetch timed out")])
    apply_batch(session, [failed])  # a late copy of the failed attempt must not undo the success
    row = events(session)["e1"]
    assert (row.status, row.last_error, row.image_error, row.attempts) == (
        "tagged", None, "image fetch timed out", 2)
    assert tags(session) == {("colour", "navy", "auto", "model"), ("type", "shoes", "review", "model")}


def test_timestamps_are_stored_and_read_as_utc(session: Session) -> None:
    paris = timezone(timedelta(hours=2))
    apply_batch(session, [result("e1", occurred_at=datetime(2025, 6, 1, 14, 0, tzinfo=paris))])
    stored = session.scalars(sa.select(Product.last_event_at)).one()
    assert stored == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert stored.utcoffset() == timedelta(0)

    with pytest.raises(ValueError, match="timezone-aware"):
        result("e2", occurred_at=datetime(2025, 6, 1, 12, 0))
    with pytest.raises(StatementError, match="naive datetime"):
        session.execute(sa.update(ModelVersion).values(promoted_at=datetime(2025, 6, 1)))


def test_invalid_tag_status_is_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="'confirmed' is not auto or review"):
        result(tags=[("colour", "navy", 0.9, "confirmed")])
    apply_batch(session, [result()])
    with pytest.raises(IntegrityError), session.begin_nested():
        session.execute(sa.update(ProductTag).values(status="approved"))
    with pytest.raises(IntegrityError), session.begin_nested():
        session.execute(sa.update(ProductTag).values(status="confirmed"))  # still source='model'


def test_deleting_a_product_deletes_its_tags(session: Session) -> None:
    apply_batch(session, [result("e1", "p1"), result("e2", "p2")])
    session.execute(sa.delete(Product).where(Product.product_id == "p1"))
    assert tags(session, "p1") == set()
    assert len(tags(session, "p2")) == 2


def test_read_helpers(session: Session) -> None:
    apply_batch(session, [result("e1", "p1"), result("e2", "p2"), result("e3", "p3", tags=[])])
    record_human_decision(session, "p3", "colour", "navy", "confirmed")
    record_human_decision(session, "p2", "colour", "navy", "rejected")

    assert products_with_tag(session, "colour", "navy") == ["p1", "p3"]
    assert products_with_tag(session, "colour", "navy", after="p1") == ["p3"]
    assert products_with_tag(session, "type", "shoes", statuses=["review"], limit=1) == ["p1"]
    assert [(t.axis, t.value, t.status) for t in tags_for_product(session, "p2")] == [
        ("colour", "navy", "rejected"), ("type", "shoes", "review")]


def test_only_one_live_model(session: Session) -> None:
    metrics = {"macro_f1": {"colour": 0.8}}
    session.add(ModelVersion(version="v1", uri="s3://m/v1", status="live", metrics=metrics))
    session.add(ModelVersion(version="v2", uri="s3://m/v2", status="candidate", parent_version="v1"))
    session.flush()
    with pytest.raises(IntegrityError), session.begin_nested():
        session.execute(sa.update(ModelVersion).where(ModelVersion.version == "v2").values(status="live"))
    # Promotion: retire the old live model first, in the same transaction.
    session.execute(sa.update(ModelVersion).where(ModelVersion.status == "live").values(status="retired"))
    session.execute(sa.update(ModelVersion).where(ModelVersion.version == "v2").values(status="live"))
    rows = session.execute(sa.select(ModelVersion.version, ModelVersion.status, ModelVersion.metrics)
                           .order_by(ModelVersion.version))
    assert [tuple(row) for row in rows] == [("v1", "retired", metrics), ("v2", "live", {})]


def test_review_reasons_and_novelty_are_stored_and_replaced(session: Session) -> None:
    """Why a tag was held back and how novel the product looked travel with the write, and a re-tag
    replaces them like the tags themselves."""
    held = (("colour", "navy", 0.97, "review", "contradiction"), ("type", "shoes", 0.99, "review",
                                                                  "out_of_domain"))
    apply_batch(session, [result(tags=held, novelty=1.7, novelty_reason="title: 80% unknown tokens")])
    rows = dict(session.execute(sa.select(ProductTag.value, ProductTag.reason)).tuples().all())
    assert rows == {"navy": "contradiction", "shoes": "out_of_domain"}
    assert (product(session).novelty, product(session).novelty_reason) == (1.7, "title: 80% unknown tokens")

    apply_batch(session, [result("e2", occurred_at=T1, novelty=0.2)])  # an ordinary re-upload
    assert set(session.execute(sa.select(ProductTag.reason)).scalars()) == {None}
    assert (product(session).novelty, product(session).novelty_reason) == (0.2, None)


def test_unknown_review_reason_and_non_finite_novelty_are_refused() -> None:
    with pytest.raises(ValueError, match="tag reason 'bored' is not one of out_of_domain, contradiction"):
        result(tags=(("colour", "navy", 0.9, "review", "bored"),))
    with pytest.raises(ValueError, match="novelty is nan"):
        result(novelty=float("nan"))


def test_evidence_and_every_column_round_trip_through_the_batch_write(session: Session) -> None:
    """Postgres writes the batch as arrays (unnest): JSON, floats, NULLs and times must come back as given."""
    evidence = {"shares": {"title": 0.7, "photo": 0.3}, "title_alone": "Men", "photo_alone": None}
    r = result(tags=(("gender", "Men", 0.991, "auto", None, evidence), ("usage", "Sports", 0.5, "review",
                                                                          "one_input", None)))
    apply_batch(session, [r])
    query = sa.select(ProductTag).where(ProductTag.product_id == "p1")
    rows = {row.axis: row for row in session.execute(query).scalars()}
    assert rows["gender"].evidence == evidence and rows["gender"].reason is None
    usage = rows["usage"]
    assert (usage.evidence, usage.reason, usage.status) == (None, "one_input", "review")
    assert rows["gender"].score == pytest.approx(0.991) and rows["gender"].updated_at.tzinfo is not None
