"""A person's decision on one tag (confirm, reject, correct), stored as a human label.

One product row lock serialises deciders and the workers' tag writes, so a single-label axis never
ends up with two confirmed values. Never commits: the request or command that calls it does.
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Product, ProductTag
from shared.db.tags import record_human_decision
from shared.errors import PermanentError
from shared.labels.text import MAX_VALUE_LENGTH, text_problem

Action = Literal["confirm", "reject", "correct"]
ACTIONS: tuple[Action, ...] = ("confirm", "reject", "correct")


class LabelError(PermanentError):
    """A decision that cannot be stored as given (bad action, missing or blank value)."""


class ProductNotFound(LabelError):
    """The decision names a product the database does not have (an API maps this to 404)."""


def _clean(name: str, value: str | None) -> str:
    """A stripped, storable axis or value; blank, NUL-bearing or over-long text is refused."""
    text = (value or "").strip()
    problem = text_problem(text) if text else "is blank"
    if problem is None and len(text) > MAX_VALUE_LENGTH:
        problem = f"is {len(text)} characters (at most {MAX_VALUE_LENGTH})"
    if problem is not None:
        raise LabelError(f"{name} {problem}")
    return text


def decide(
    session: Session, product_id: str, axis: str, value: str, action: Action,
    corrected_value: str | None = None, *, multi: bool = False,
) -> dict[str, str]:
    """Store a person's decision on one tag; idempotent (a repeated decision writes nothing), never commits.

    ``confirm`` confirms ``value``; ``reject`` rejects it; ``correct`` rejects it and confirms
    ``corrected_value``. On a single-label axis (``multi=False``) a confirmation also rejects the
    product's other human-confirmed values on the axis. Returns ``{value: new status}`` for the
    rows it changed.
    """
    if action not in ACTIONS:
        raise LabelError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    axis, value = _clean("axis", axis), _clean("value", value)
    right: str | None = None
    if action == "correct":
        if corrected_value is None or not corrected_value.strip():
            raise LabelError(f"correcting {axis}={value} needs corrected_value (the right value)")
        right = _clean("corrected_value", corrected_value)
        if right == value:
            raise LabelError(f"corrected_value equals the value being corrected ({value!r}); use confirm")
    elif corrected_value is not None:
        raise LabelError(f"corrected_value goes only with 'correct', not with {action!r}")
    elif action == "confirm":
        right = value
    # Lock the product row: it serialises two people deciding on one product (two "only" values on a
    # single-label axis) and a worker replacing its model tags (apply_batch's upsert takes this lock).
    found = session.scalar(
        sa.select(Product.product_id).where(Product.product_id == product_id).with_for_update()
    )
    if found is None:
        raise ProductNotFound(f"product {product_id!r} does not exist")
    current = {tag_value: status for tag_value, status in session.execute(
        sa.select(ProductTag.value, ProductTag.status).where(
            ProductTag.product_id == product_id, ProductTag.axis == axis, ProductTag.source == "human")
    ).tuples()}
    changes: dict[str, str] = {}

    def store(tag_value: str, status: str) -> None:
        if current.get(tag_value) != status:
            record_human_decision(session, product_id, axis, tag_value, status)
            current[tag_value] = changes[tag_value] = status

    if action != "confirm":
        store(value, "rejected")
    if right is not None:
        store(right, "confirmed")
        if not multi:
            for other, status in sorted(current.items()):
                if other != right and status == "confirmed":
                    store(other, "rejected")
    return changes
