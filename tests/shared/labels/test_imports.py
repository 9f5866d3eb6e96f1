"""import_labels: the sample catalogue lands whole and once; bad rows are refused alone, with reasons."""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Product, ProductTag
from shared.db.sql import chunks
from shared.db.tags import record_human_decision
from shared.errors import ManifestError
from shared.labels import imports
from shared.labels.imports import CATALOGUE_SELLER, ImportSummary, Refusal, import_labels
from shared.labels.queries import label_watermark, labels_since
from shared.ml.dataset import load_manifest, load_records
from tests.shared.labels.conftest import WriteManifest, jpeg

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def snapshot(session: Session) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every product and tag row, timestamps included: a no-op import must not even touch them."""
    p, t = Product.__table__.c, ProductTag.__table__.c
    return (
        [tuple(r) for r in session.execute(sa.select(Product.__table__).order_by(p.product_id))],
        [tuple(r) for r in session.execute(sa.select(ProductTag.__table__).order_by(t.product_id, t.axis,
                                                                                    t.value))],
    )


def add_product(session: Session, product_id: str, title: str = "Old seller title", **extra: Any) -> None:
    session.add(Product(product_id=product_id, seller_id="s1", title=title, content_hash="h",
                        last_event_at=T0, **extra))
    session.flush()


def human_tags(session: Session, product_id: str) -> dict[tuple[str, str], str]:
    rows = session.execute(sa.select(ProductTag.axis, ProductTag.value, ProductTag.status)
                           .where(ProductTag.product_id == product_id, ProductTag.source == "human"))
    return {(axis, value): status for axis, value, status in rows}


def row(row_id: str, *, title: str = "A shirt", image: str | None = None, colour: Any = "Red",
        usage: Any = "Casual") -> dict[str, Any]:
    return {"id": row_id, "title": title, "image": image, "colour": colour, "usage": usage}


def test_sample_imports_whole_then_again_changes_nothing(
    session: Session, sample_manifest: Path, image_dir: Path
) -> None:
    seen: list[tuple[int, int]] = []
    first = import_labels(session, sample_manifest, image_dir=image_dir,
                          progress=lambda done, total: seen.append((done, total)))
    session.commit()

    assert first == ImportSummary(rows=200, products_added=200, labels_added=1400, images_stored=200)
    assert seen[-1] == (200, 200)
    assert session.scalar(sa.select(sa.func.count()).select_from(Product)) == 200
    assert session.scalar(sa.select(sa.func.count()).select_from(ProductTag).where(
        ProductTag.source == "human", ProductTag.status == "confirmed")) == 1400
    assert session.scalar(sa.select(sa.func.count()).select_from(ProductTag)) == 1400

    manifest = load_manifest(sample_manifest)
    record = load_records(manifest)[0]
    product = session.get(Product, record.id)
    assert product is not None
    assert (product.seller_id, product.title, product.description) == (CATALOGUE_SELLER, record.text, None)
    assert product.image_uri is not None and product.image_uri.startswith("file:///")
    stored = Path(unquote(urlparse(product.image_uri).path))
    assert stored.parent == image_dir.resolve()
    assert stored.name == hashlib.sha256(stored.read_bytes()).hexdigest() + ".jpg"
    assert len(list(image_dir.glob("*.jpg"))) == 200
    assert not list(image_dir.glob(".partial-*"))
    assert human_tags(session, record.id) == {(axis, values[0]): "confirmed"
                                              for axis, values in record.labels.items()}

    before, watermark = snapshot(session), label_watermark(session)
    second = import_labels(session, sample_manifest, image_dir=image_dir)
    session.commit()

    assert second == ImportSummary(rows=200, products_unchanged=200, labels_unchanged=1400)
    assert snapshot(session) == before
    assert label_watermark(session) == watermark
    assert labels_since(session, watermark) == 0


def test_bad_rows_are_refused_alone_with_their_reasons(
    session: Session, write_manifest: WriteManifest, image_dir: Path
) -> None:
    rows = [
        row("ok-1", title="Red Casual Shirt", image="img/ok.jpg"),
        row("blank", title="   "),
        row("long-value", colour="R" * 101),
        row("two-values", colour=["Red", "Blue"]),
        row("no-labels", colour="", usage=None),
        row("nul", title="A\u0000shirt"),
        row("missing-image", image="img/gone.jpg"),
        row("corrupt-image", image="img/bad.jpg"),
        row("remote-image", image="https://cdn.example/x.jpg"),
        row("x" * 201),
        row("long-title", title="t" * 501),
        row("ok-2", title="Blue Formal Shirt", colour="Blue", usage=""),
    ]
    path = write_manifest(rows, images={"img/ok.jpg": jpeg(), "img/bad.jpg": jpeg()[:40]})

    summary = import_labels(session, path, image_dir=image_dir)

    reasons = {refusal.row_id: refusal.reason for refusal in summary.refused}
    assert [r.row_id for r in summary.refused] == [row["id"] for row in rows[1:-1]]  # in row order
    assert "empty title" in reasons["blank"]
    assert "at most 100" in reasons["long-value"]
    assert "single-label" in reasons["two-values"] and "2 values" in reasons["two-values"]
    assert "no label" in reasons["no-labels"]
    assert "NUL" in reasons["nul"]
    assert "img/gone.jpg" in reasons["missing-image"] and "not found" in reasons["missing-image"]
    assert "not a readable picture" in reasons["corrupt-image"]
    assert "scheme 'https'" in reasons["remote-image"]
    assert "at most 200" in reasons["x" * 201]
    assert "at most 500" in reasons["long-title"]
    assert (summary.rows, summary.imported, summary.products_added, summary.labels_added) == (12, 2, 2, 3)
    assert human_tags(session, "ok-1") == {("colour", "Red"): "confirmed", ("usage", "Casual"): "confirmed"}
    assert human_tags(session, "ok-2") == {("colour", "Blue"): "confirmed"}
    ok2 = session.get(Product, "ok-2")
    assert ok2 is not None and ok2.image_uri is None
    assert set(session.scalars(sa.select(Product.product_id))) == {"ok-1", "ok-2"}
    assert Refusal("blank", reasons["blank"]) in summary.refused


def test_unusable_manifest_raises_before_writing(
    session: Session, write_manifest: WriteManifest, tmp_path: Path, image_dir: Path
) -> None:
    with pytest.raises(ManifestError, match="manifest file not found"):
        import_labels(session, tmp_path / "nope.yaml", image_dir=image_dir)
    duplicate = write_manifest([row("p1"), row("p1")])
    with pytest.raises(ManifestError, match="duplicate id 'p1'"):
        import_labels(session, duplicate, image_dir=image_dir)
    assert session.scalar(sa.select(sa.func.count()).select_from(Product)) == 0


def test_existing_product_is_updated_and_single_axis_labels_superseded(
    session: Session, write_manifest: WriteManifest, image_dir: Path
) -> None:
    add_product(session, "p1", description="seller's description", locale="en-GB", model_version="v1")
    add_product(session, "p2", image_uri="s3://images/p2.jpg")
    record_human_decision(session, "p1", "colour", "Blue", "confirmed")
    record_human_decision(session, "p1", "usage", "Casual", "rejected")
    record_human_decision(session, "p1", "style", "Loose", "confirmed")  # an axis the manifest lacks
    path = write_manifest([row("p1", title="Navy Casual Shirt", image="a.jpg", colour="Navy"),
                           row("p2", title="Old seller title")], images={"a.jpg": jpeg()})

    summary = import_labels(session, path, image_dir=image_dir)

    assert (summary.products_updated, summary.products_unchanged) == (1, 1)
    assert (summary.labels_added, summary.labels_superseded) == (4, 1)
    assert human_tags(session, "p1") == {("colour", "Blue"): "rejected", ("colour", "Navy"): "confirmed",
                                         ("usage", "Casual"): "confirmed", ("style", "Loose"): "confirmed"}
    product = session.get(Product, "p1")
    assert product is not None
    # The label describes this text and image; who sells it and when it was uploaded stay as they were.
    assert (product.title, product.description, product.image_uri is not None) == ("Navy Casual Shirt",
                                                                                   None, True)
    assert (product.seller_id, product.locale, product.model_version, product.last_event_at) == (
        "s1", "en-GB", "v1", T0)
    p2 = session.get(Product, "p2")
    assert p2 is not None and p2.image_uri == "s3://images/p2.jpg"  # a row without an image keeps it


def test_multi_label_axis_confirms_every_value(
    session: Session, write_manifest: WriteManifest, image_dir: Path
) -> None:
    path = write_manifest([{"id": "p1", "title": "Cotton Linen Shirt", "image": None,
                            "material": "cotton|linen"}], axes={"material": "multi"})

    summary = import_labels(session, path, image_dir=image_dir)

    assert summary.labels_added == 2
    assert human_tags(session, "p1") == {("material", "cotton"): "confirmed",
                                         ("material", "linen"): "confirmed"}


def test_small_chunks_give_the_same_result(
    session: Session, sample_manifest: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large catalogues are read and written in chunks; the chunk boundaries must not show in the result."""
    monkeypatch.setattr(imports, "_ROWS_PER_WRITE", 30)
    monkeypatch.setattr(imports, "_IMAGE_MEMORY_BUDGET", 1)  # one pass over the archive per 30 rows
    monkeypatch.setattr(imports, "chunks", functools.partial(chunks, size=7))
    seen: list[int] = []

    summary = import_labels(session, sample_manifest, image_dir=image_dir,
                            progress=lambda done, total: seen.append(done))

    assert summary == ImportSummary(rows=200, products_added=200, labels_added=1400, images_stored=200)
    assert seen == sorted(seen) and seen[-1] == 200 and len(set(seen)) == 7
    assert import_labels(session, sample_manifest, image_dir=image_dir) == ImportSummary(
        rows=200, products_unchanged=200, labels_unchanged=1400)
