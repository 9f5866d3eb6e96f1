"""Reads for retraining (labelled products, watermark, labels since); the model never overwrites a label."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Product, ProductTag
from shared.db.tags import TaggingResult, apply_batch, record_human_decision
from shared.labels.decisions import decide
from shared.labels.imports import import_labels
from shared.labels.queries import LabelledProduct, label_watermark, labelled_products, labels_since
from shared.ml.dataset import load_manifest, load_records

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def upload(product_id: str, *, title: str = "Navy Running Shoes", description: str | None = None,
           tags: tuple[tuple[str, str, float, str], ...] = (), at: datetime = T0) -> TaggingResult:
    return TaggingResult(
        event_id=f"e-{product_id}-{at.isoformat()}", product_id=product_id, seller_id="s1", title=title,
        description=description, image_uri="s3://images/x.jpg", locale=None, occurred_at=at,
        content_hash="h", model_version="v1", tags=tags,
    )


def test_labelled_products_returns_confirmed_labels_only(session: Session) -> None:
    apply_batch(session, [
        upload("p1", description="Mesh upper", tags=(("colour", "navy", 0.9, "auto"),)),
        upload("p2", tags=(("colour", "black", 0.9, "auto"),)),  # model tags only: not a label
        upload("p3"),
    ])
    decide(session, "p3", "colour", "red", "reject")  # a negative alone does not make a training example
    decide(session, "p1", "colour", "navy", "correct", "blue")
    decide(session, "p1", "usage", "sports", "confirm")

    found = labelled_products(session)

    assert [p.product_id for p in found] == ["p1"]
    p1 = found[0]
    assert p1 == LabelledProduct(product_id="p1", text="Navy Running Shoes Mesh upper",
                                 image_uri="s3://images/x.jpg",
                                 labels={"colour": ["blue"], "usage": ["sports"]},
                                 labelled_at=p1.labelled_at)
    assert p1.labelled_at == label_watermark(session)
    assert labelled_products(session, axes=["usage"])[0].labels == {"usage": ["sports"]}
    assert labelled_products(session, axes=["season"]) == []
    assert labelled_products(session, exclude={"p1"}) == []


def test_sample_labels_and_exclude(session: Session, sample_manifest: Path, tmp_path: Path) -> None:
    import_labels(session, sample_manifest, image_dir=tmp_path)
    records = {r.id: r for r in load_records(load_manifest(sample_manifest))}

    found = labelled_products(session)
    assert len(found) == 200
    assert {p.product_id: (p.text, p.labels) for p in found} == {
        r.id: (r.text, r.labels) for r in records.values()
    }
    assert all(p.image_uri and p.image_uri.startswith("file://") for p in found)

    held_out = set(sorted(records)[:20])
    kept = labelled_products(session, exclude=held_out)
    assert len(kept) == 180 and not held_out & {p.product_id for p in kept}


def test_watermark_and_labels_since(session: Session) -> None:
    assert label_watermark(session) is None
    assert labels_since(session, None) == 0
    apply_batch(session, [upload("p1", tags=(("colour", "navy", 0.9, "auto"),)), upload("p2")])
    assert label_watermark(session) is None  # model tags are not labels

    decide(session, "p1", "colour", "navy", "confirm")
    first = label_watermark(session)
    assert first is not None and first.tzinfo is not None
    assert labels_since(session, None) == 1
    assert labels_since(session, first) == 0
    assert labels_since(session, first - timedelta(seconds=1)) == 1

    decide(session, "p1", "colour", "navy", "correct", "blue")
    decide(session, "p2", "usage", "casual", "confirm")
    second = label_watermark(session)
    assert second is not None and second > first
    assert labels_since(session, first) == 3  # navy rejected, blue confirmed, casual confirmed
    assert labels_since(session, None) == 3  # rows, not decisions: navy is one row whatever its history


def test_a_model_write_never_overwrites_human_labels(session: Session) -> None:
    """Regression: a re-tag after a person decided keeps the decision and only replaces model rows."""
    apply_batch(session, [upload("p1", tags=(("colour", "navy", 0.9, "auto"), ("colour", "black", 0.3,
                                                                              "review")))])
    decide(session, "p1", "colour", "navy", "correct", "blue")
    record_human_decision(session, "p1", "usage", "sports", "confirmed")
    watermark = label_watermark(session)
    before = labelled_products(session)

    # The model proposes the rejected value again, contradicts the confirmed one, and adds a new one.
    retag = (("colour", "navy", 0.99, "auto"), ("colour", "blue", 0.01, "review"),
             ("usage", "formal", 0.8, "auto"), ("colour", "green", 0.5, "review"))
    outcome = apply_batch(session, [upload("p1", title="Navy Trail Shoes", at=T0 + timedelta(hours=1),
                                           tags=retag)])

    assert outcome.applied == ("p1",)
    rows = session.execute(sa.select(ProductTag.axis, ProductTag.value, ProductTag.status, ProductTag.source)
                           .where(ProductTag.product_id == "p1"))
    assert set(rows) == {("colour", "navy", "rejected", "human"), ("colour", "blue", "confirmed", "human"),
                         ("usage", "sports", "confirmed", "human"), ("usage", "formal", "auto", "model"),
                         ("colour", "green", "review", "model")}
    assert label_watermark(session) == watermark
    after = labelled_products(session)
    assert [(p.product_id, p.labels) for p in after] == [(p.product_id, p.labels) for p in before]
    assert after[0].text == "Navy Trail Shoes"  # the upload updated the product; the labels stayed


def test_an_upload_after_an_import_wins_the_product_but_not_the_labels(
    session: Session, sample_manifest: Path, tmp_path: Path
) -> None:
    import_labels(session, sample_manifest, image_dir=tmp_path)
    record = load_records(load_manifest(sample_manifest))[0]
    labels = {p.product_id: p.labels for p in labelled_products(session)}[record.id]

    # Even an upload that happened long ago (delivered late) is newer than an import: imports are not uploads.
    outcome = apply_batch(session, [upload(record.id, title="Seller's own title", at=T0,
                                           tags=(("gender", "Unisex", 0.9, "auto"),))])

    assert outcome.applied == (record.id,)
    product = session.get(Product, record.id)
    assert product is not None and product.title == "Seller's own title"
    assert {p.product_id: p.labels for p in labelled_products(session)}[record.id] == labels
