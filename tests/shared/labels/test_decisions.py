"""decide(): confirm, reject, correct; a single-label axis keeps one confirmed value; repeats are no-ops."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Product, ProductTag
from shared.db.tags import TaggingResult, apply_batch
from shared.labels.decisions import LabelError, ProductNotFound, decide
from shared.labels.queries import labels_since

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def product(session: Session) -> str:
    """p1 with model tags: colour navy (auto) and black (review)."""
    apply_batch(session, [TaggingResult(
        event_id="e1", product_id="p1", seller_id="s1", title="Navy Running Shoes", description=None,
        image_uri=None, locale=None, occurred_at=T0, content_hash="h", model_version="v1",
        tags=[("colour", "navy", 0.9, "auto"), ("colour", "black", 0.4, "review")],
    )])
    return "p1"


def tags(session: Session, product_id: str = "p1") -> dict[str, tuple[str, str, float]]:
    rows = session.execute(sa.select(ProductTag.value, ProductTag.status, ProductTag.source, ProductTag.score)
                           .where(ProductTag.product_id == product_id, ProductTag.axis == "colour"))
    return {value: (status, source, score) for value, status, source, score in rows}


def test_confirm_turns_the_model_tag_into_a_human_label(session: Session, product: str) -> None:
    assert decide(session, product, "colour", "navy", "confirm") == {"navy": "confirmed"}
    assert tags(session) == {"navy": ("confirmed", "human", 0.9), "black": ("review", "model", 0.4)}
    # A repeated decision writes nothing: no label timestamp moves, no retrain is triggered by it.
    since = labels_since(session, None)
    assert decide(session, product, "colour", "navy", "confirm") == {}
    assert labels_since(session, None) == since


def test_reject_records_a_negative(session: Session, product: str) -> None:
    assert decide(session, product, "colour", "black", "reject") == {"black": "rejected"}
    assert tags(session)["black"] == ("rejected", "human", 0.4)
    assert decide(session, product, "colour", "purple", "reject") == {"purple": "rejected"}  # never proposed
    assert tags(session)["purple"] == ("rejected", "human", 0.0)


def test_correct_rejects_the_wrong_value_and_confirms_the_right_one(session: Session, product: str) -> None:
    assert decide(session, product, "colour", "navy", "correct", "blue") == {"navy": "rejected",
                                                                             "blue": "confirmed"}
    assert tags(session) == {"navy": ("rejected", "human", 0.9), "blue": ("confirmed", "human", 1.0),
                             "black": ("review", "model", 0.4)}


def test_single_label_axis_keeps_one_confirmed_value(session: Session, product: str) -> None:
    decide(session, product, "colour", "navy", "confirm")
    assert decide(session, product, "colour", "black", "confirm") == {"black": "confirmed",
                                                                      "navy": "rejected"}
    assert decide(session, product, "colour", "black", "correct", "grey") == {"black": "rejected",
                                                                              "grey": "confirmed"}
    confirmed = [v for v, (status, _, _) in tags(session).items() if status == "confirmed"]
    assert confirmed == ["grey"]


def test_multi_label_axis_keeps_every_confirmed_value(session: Session, product: str) -> None:
    decide(session, product, "colour", "navy", "confirm", multi=True)
    assert decide(session, product, "colour", "black", "confirm", multi=True) == {"black": "confirmed"}
    assert {v for v, (status, _, _) in tags(session).items() if status == "confirmed"} == {"navy", "black"}


def test_a_rejected_value_can_be_confirmed_later(session: Session, product: str) -> None:
    decide(session, product, "colour", "navy", "reject")
    assert decide(session, product, "colour", "navy", "confirm") == {"navy": "confirmed"}


@pytest.mark.parametrize(("args", "error", "match"), [
    (("nope", "colour", "navy", "confirm"), ProductNotFound, "product 'nope' does not exist"),
    (("p1", "colour", "navy", "correct"), LabelError, "needs corrected_value"),
    (("p1", "colour", "navy", "correct", "  "), LabelError, "needs corrected_value"),
    (("p1", "colour", "navy", "correct", "navy"), LabelError, "equals the value"),
    (("p1", "colour", "navy", "confirm", "blue"), LabelError, "only with 'correct'"),
    (("p1", "colour", "navy", "approve"), LabelError, "action must be one of"),
    (("p1", "colour", " ", "confirm"), LabelError, "value is blank"),
    (("p1", "", "navy", "confirm"), LabelError, "axis is blank"),
    (("p1", "colour", "n" * 101, "confirm"), LabelError, "at most 100"),
    (("p1", "colour", "na\x00vy", "confirm"), LabelError, "NUL"),
])
def test_bad_decisions_are_clear_errors_and_write_nothing(
    session: Session, product: str, args: tuple[str, ...], error: type[Exception], match: str
) -> None:
    before = tags(session)
    with pytest.raises(error, match=match):
        decide(session, *args)  # type: ignore[arg-type]
    assert tags(session) == before
    assert session.get(Product, "nope") is None
