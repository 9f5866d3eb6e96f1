"""The reads retraining needs: labelled products as training examples, and how many labels are new.

Read-only: the trainer and the retraining trigger call them inside their own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Product, ProductTag

_products = cast(sa.Table, Product.__table__)
_tags = cast(sa.Table, ProductTag.__table__)


@dataclass(slots=True)
class LabelledProduct:
    """A training example: the product's text and image with its confirmed values per axis."""

    product_id: str
    text: str
    image_uri: str | None
    labels: dict[str, list[str]]
    labelled_at: datetime  # the newest of the returned labels' updated_at


def labelled_products(
    session: Session, *, exclude: Set[str] = frozenset(), axes: Sequence[str] | None = None,
) -> list[LabelledProduct]:
    """Products with at least one confirmed human label (on ``axes``, if given), by product id; read-only.

    ``exclude`` (for example the frozen evaluation set) is applied here rather than in SQL, so
    a set of any size costs no bound parameters.
    """
    query = (
        sa.select(_products.c.product_id, _products.c.title, _products.c.description,
                  _products.c.image_uri, _tags.c.axis, _tags.c.value, _tags.c.updated_at)
        .join(_tags, _tags.c.product_id == _products.c.product_id)
        .where(_tags.c.source == "human", _tags.c.status == "confirmed")
        .order_by(_products.c.product_id, _tags.c.axis, _tags.c.value)
    )
    if axes is not None:
        query = query.where(_tags.c.axis.in_(sorted(set(axes))))
    found: dict[str, LabelledProduct] = {}
    for row in session.execute(query):
        if row.product_id in exclude:
            continue
        product = found.get(row.product_id)
        if product is None:
            text = f"{row.title} {row.description}" if row.description else row.title
            product = found[row.product_id] = LabelledProduct(
                product_id=row.product_id, text=text, image_uri=row.image_uri, labels={},
                labelled_at=row.updated_at,
            )
        product.labels.setdefault(row.axis, []).append(row.value)
        product.labelled_at = max(product.labelled_at, row.updated_at)
    return list(found.values())


def label_watermark(session: Session) -> datetime | None:
    """When the newest human label (confirmed or rejected) was written; None before the first one.

    Recorded on a trained model (``model_versions.label_watermark``) so that
    :func:`labels_since` can tell how many labels arrived after it.
    """
    return session.scalar(sa.select(sa.func.max(_tags.c.updated_at)).where(_tags.c.source == "human"))


def labels_since(session: Session, ts: datetime | None) -> int:
    """How many human label rows were written after ``ts`` (every one when ``ts`` is None); read-only."""
    query = sa.select(sa.func.count()).select_from(_tags).where(_tags.c.source == "human")
    if ts is not None:
        query = query.where(_tags.c.updated_at > ts)
    return int(session.scalar(query) or 0)
