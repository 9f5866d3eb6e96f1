"""A human label import holds product ids to the event contract's rule (one URL path segment, no control
characters): a row whose id breaks it is refused alone, as ``row N: product_id: reason``."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Product
from shared.labels.imports import import_labels
from tests.shared.labels.conftest import WriteManifest


def row(row_id: str) -> dict[str, str]:
    return {"id": row_id, "title": "A shirt", "colour": "Red", "usage": "Casual"}


def test_ids_the_event_contract_refuses_are_refused_alone_naming_row_and_field(
    session: Session, write_manifest: WriteManifest, image_dir: Path,
) -> None:
    ids = ["ok-1", "a/b", "..", ".", "tab\there", "nul\x00", "ok-2"]
    summary = import_labels(session, write_manifest([row(i) for i in ids]), image_dir=image_dir)

    reasons = {refusal.row_id: refusal.reason for refusal in summary.refused}
    assert list(reasons) == ids[1:-1]  # in row order
    assert reasons["a/b"] == ("row 2: product_id: must not contain '/' (the API's /v1/products/{product_id} "
                              "routes could not address it)")
    assert reasons[".."].startswith("row 3: product_id: must not be '.' or '..'")
    assert reasons["."].startswith("row 4: product_id: must not be '.' or '..'")
    assert reasons["tab\there"] == "row 5: product_id: contains a control character"
    assert reasons["nul\x00"] == "row 6: product_id: contains a NUL character"
    assert set(session.scalars(sa.select(Product.product_id))) == {"ok-1", "ok-2"}
    assert summary.imported == 2
