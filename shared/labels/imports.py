"""Catalogue imports: a labelled dataset manifest becomes products with confirmed human labels.

Idempotent and row by row: a bad row is refused with its reason and never stops the others, and a
second import of the same manifest changes nothing. Never commits: the caller owns the transaction,
so an import lands whole.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import Product, ProductTag
from shared.db.sql import chunks, dialect_insert
from shared.db.tags import product_content_hash
from shared.events import ProductId
from shared.labels.text import MAX_VALUE_LENGTH, text_problem
from shared.ml.dataset import DatasetManifest, Record, load_manifest, load_records, read_images

CATALOGUE_SELLER = "catalogue"
# The product.uploaded contract's limits: an imported product must be one a seller could also upload.
MAX_ID_LENGTH = 200
MAX_TITLE_LENGTH = 500
DEFAULT_MAX_IMAGE_BYTES = 10_000_000
# Uploads are ordered by last_event_at; an import is not an upload, so it sorts before every real
# one and the seller's next upload of the product always wins (its human labels stay).
IMPORTED_EVENT_AT = datetime(1970, 1, 1, tzinfo=UTC)
_ROWS_PER_WRITE = 2000  # rows written per round of statements: bounds the parameter lists held at once
# Images held in memory at once; each chunk of rows is one pass over an images archive, so a small
# archive is read once and a large one in as few passes as this budget allows.
_IMAGE_MEMORY_BUDGET = 256 * 1024 * 1024
# The product.uploaded contract's product_id rule (one URL path segment, no control characters): an
# imported product must be one every /v1/products/{product_id} route can address, like an uploaded one.
_PRODUCT_ID: TypeAdapter[str] = TypeAdapter(ProductId)
_products = cast(sa.Table, Product.__table__)
_tags = cast(sa.Table, ProductTag.__table__)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One manifest row left out of an import, with the reason an operator can act on."""

    row_id: str
    reason: str


@dataclass(slots=True)
class ImportSummary:
    """What an import changed; a second import of the same manifest adds and updates nothing."""

    rows: int = 0
    products_added: int = 0
    products_updated: int = 0
    products_unchanged: int = 0
    labels_added: int = 0  # newly confirmed (new rows, model rows taken over, rejections reversed)
    labels_unchanged: int = 0
    labels_superseded: int = 0  # earlier confirmed values on a single-label axis, now rejected
    images_stored: int = 0  # image files written (content-addressed: a known image is not rewritten)
    refused: list[Refusal] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.rows - len(self.refused)


def _product_id_problem(value: str) -> str | None:
    """Why the event contract would refuse ``value`` as a product_id, in its words, or None."""
    try:
        _PRODUCT_ID.validate_python(value)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        if error["type"] == "string_pattern_mismatch":
            return "must not be blank"
        return str(error["msg"]).removeprefix("Value error, ")
    return None


def _row_problem(record: Record, manifest: DatasetManifest, row: int) -> str | None:
    """The first reason a row (``row``: its 1-based position) cannot be imported as it stands (images
    are checked later), or None."""
    if len(record.id) > MAX_ID_LENGTH:
        return f"id is {len(record.id)} characters (at most {MAX_ID_LENGTH})"
    if (problem := _product_id_problem(record.id)) is not None:
        return f"row {row}: product_id: {problem}"
    if not record.text:
        return f"empty title: the text column(s) {manifest.text} are blank"
    if len(record.text) > MAX_TITLE_LENGTH:
        return f"title is {len(record.text)} characters (at most {MAX_TITLE_LENGTH})"
    for name, text in (("id", record.id), ("title", record.text)):
        if (problem := text_problem(text)) is not None:
            return f"{name} {problem}"
    if not any(record.labels.values()):
        return f"no label on any axis ({', '.join(manifest.axes)})"
    for axis, values in record.labels.items():
        if manifest.axes[axis].kind == "single" and len(values) > 1:
            return f"axis '{axis}' is single-label but the row gives {len(values)} values: {values}"
        for value in values:
            if len(value) > MAX_VALUE_LENGTH:
                return f"axis '{axis}': value is {len(value)} characters (at most {MAX_VALUE_LENGTH})"
            if (problem := text_problem(value)) is not None:
                return f"axis '{axis}': value {problem}"
    return None


def _image_problem(data: bytes, max_bytes: int) -> str | None:
    """Why image bytes are unusable for training, or None; decodes headers only (cheap)."""
    if not data:
        return "image file is empty"
    if len(data) > max_bytes:
        return f"image is {len(data)} bytes (at most {max_bytes})"
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as exc:  # any decoder failure is this row's problem, recorded as its reason
        return f"image is not a readable picture ({type(exc).__name__}: {exc})"
    return None


def store_image(data: bytes, image_dir: Path) -> tuple[Path, bool]:
    """Write image bytes under their sha256 name, once; atomic, so a crash never leaves half a file.

    Returns the path and whether it was written now (False: the same image was already there).
    """
    path = image_dir / f"{hashlib.sha256(data).hexdigest()}.jpg"
    if path.is_file() and path.stat().st_size == len(data):
        return path, False
    image_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=image_dir, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, True


def _store_images(
    manifest: DatasetManifest, records: Sequence[Record], image_dir: Path, max_bytes: int,
    summary: ImportSummary,
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Store the rows' images; returns image URIs by row id and, for rows refused, the reason."""
    uris: dict[str, str | None] = {}
    problems: dict[str, str] = {}
    wanted: list[Record] = []
    for record in records:
        ref = record.image_ref
        scheme = urlparse(ref).scheme if ref else ""
        if ref is None:
            uris[record.id] = None
        elif manifest.archive_path is None and len(scheme) > 1 and scheme != "file":
            # read_images refuses the whole table for such a ref; refuse only its row instead.
            problems[record.id] = f"image '{ref}': scheme '{scheme}' is not importable (use a path or file://)"
        else:
            wanted.append(record)
    found = read_images(manifest, [r.image_ref for r in wanted])
    where = "in the images archive" if manifest.archive_path is not None else "on disk"
    for record in wanted:
        ref = cast(str, record.image_ref)
        data = found.get(ref)
        problem = f"image '{ref}' not found {where}" if data is None else _image_problem(data, max_bytes)
        if problem is not None:
            problems[record.id] = problem
            continue
        path, written = store_image(cast(bytes, data), image_dir)
        summary.images_stored += written
        uris[record.id] = path.resolve().as_uri()
    return uris, problems


def _write_products(
    session: Session, records: Sequence[Record], uris: dict[str, str | None], summary: ImportSummary,
    now: datetime,
) -> None:
    """Insert new products, update changed ones; the seller, upload time and model version stay.

    The label describes the row's text, so title and description follow it; an image is replaced
    only by the row's own image, never erased by a row that has none.
    """
    ids = sorted(r.id for r in records)
    existing: dict[str, tuple[str, str | None, str | None]] = {}
    for chunk in chunks(ids):
        # Row locks in key order (deadlock avoidance), held until the caller commits.
        rows = session.execute(
            sa.select(_products.c.product_id, _products.c.title, _products.c.description,
                      _products.c.image_uri)
            .where(_products.c.product_id.in_(chunk)).order_by(_products.c.product_id).with_for_update()
        )
        existing.update({row.product_id: (row.title, row.description, row.image_uri) for row in rows})
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for record in sorted(records, key=lambda r: r.id):
        image_uri = uris[record.id]
        if image_uri is None and record.id in existing:
            image_uri = existing[record.id][2]  # a row without an image says nothing about the image
        wanted = (record.text, None, image_uri)
        values = {"product_id": record.id, "title": record.text, "description": None,
                  "image_uri": image_uri, "content_hash": product_content_hash(*wanted), "updated_at": now}
        if record.id not in existing:
            new.append({**values, "seller_id": CATALOGUE_SELLER, "locale": None, "model_version": None,
                        "last_event_at": IMPORTED_EVENT_AT, "created_at": now})
        elif existing[record.id] != wanted:
            changed.append(values)
        else:
            summary.products_unchanged += 1
    if new:
        # DO NOTHING: a worker may insert the product between the SELECT and here; its upload wins.
        stmt = dialect_insert(session, _products).on_conflict_do_nothing(
            index_elements=[_products.c.product_id])
        summary.products_added += len(session.execute(stmt.returning(_products.c.product_id), new).all())
    if changed:
        session.execute(sa.update(Product), changed)  # ORM bulk UPDATE by primary key
        summary.products_updated += len(changed)


def _write_labels(
    session: Session, manifest: DatasetManifest, records: Sequence[Record], summary: ImportSummary,
    now: datetime,
) -> None:
    """Confirm every label of the rows; on single-label axes earlier confirmed values are rejected."""
    ids = sorted(r.id for r in records)
    human: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for chunk in chunks(ids):
        rows = session.execute(
            sa.select(_tags.c.product_id, _tags.c.axis, _tags.c.value, _tags.c.status)
            .where(_tags.c.product_id.in_(chunk), _tags.c.source == "human")
        )
        for row in rows:
            human[(row.product_id, row.axis)][row.value] = row.status
    confirms: list[dict[str, Any]] = []
    supersedes: list[dict[str, Any]] = []
    for record in records:
        for axis, values in record.labels.items():
            have = human.get((record.id, axis), {})
            for value in values:
                if have.get(value) == "confirmed":
                    summary.labels_unchanged += 1
                else:
                    confirms.append({"product_id": record.id, "axis": axis, "value": value, "score": 1.0,
                                     "status": "confirmed", "source": "human", "updated_at": now})
            if values and manifest.axes[axis].kind == "single":
                supersedes.extend(
                    {"product_id": record.id, "axis": axis, "value": other, "status": "rejected",
                     "updated_at": now}
                    for other, status in have.items() if status == "confirmed" and other not in values
                )
    key = ("product_id", "axis", "value")
    if confirms:
        stmt = dialect_insert(session, _tags)
        # A model row becomes the person's confirmation; its score is what the model believed, kept.
        stmt = stmt.on_conflict_do_update(
            index_elements=[_tags.c.product_id, _tags.c.axis, _tags.c.value],
            set_={"status": stmt.excluded.status, "source": stmt.excluded.source,
                  "updated_at": stmt.excluded.updated_at},
        )
        session.execute(stmt, sorted(confirms, key=lambda row: tuple(row[k] for k in key)))
        summary.labels_added += len(confirms)
    if supersedes:
        session.execute(sa.update(ProductTag), sorted(supersedes, key=lambda row: tuple(row[k] for k in key)))
        summary.labels_superseded += len(supersedes)


def _rows_per_image_chunk(manifest: DatasetManifest, rows: int) -> int:
    """Rows whose images are read together: as many as the memory budget allows (at least 2000).

    JPEGs barely compress, so an archive's size on disk estimates the bytes its images take in memory.
    """
    archive = manifest.archive_path
    if archive is None:  # files on disk: each chunk reads only its own images, no repeated passes
        return _ROWS_PER_WRITE
    per_row = max(archive.stat().st_size / max(rows, 1), 1.0)
    return max(_ROWS_PER_WRITE, int(_IMAGE_MEMORY_BUDGET / per_row))


def import_labels(
    session: Session, manifest_path: str | Path, *, image_dir: Path,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Load a labelled catalogue (a dataset manifest) as products with confirmed human labels.

    Idempotent: importing the same manifest again adds and updates nothing and moves no label
    timestamp. A bad row is refused with its reason and never stops the others; an unusable
    manifest raises ``ManifestError`` before anything is written. Images are stored under
    ``image_dir`` by content hash. Never commits. ``progress(done, total)`` follows the rows.
    """
    manifest = load_manifest(manifest_path)
    # load_records refuses the whole table for an empty or duplicate id: such rows cannot be keyed.
    records = load_records(manifest)
    summary = ImportSummary(rows=len(records))
    order = {record.id: index for index, record in enumerate(records)}
    per_chunk = _rows_per_image_chunk(manifest, len(records))
    for start in range(0, len(records), per_chunk):
        chunk = records[start : start + per_chunk]
        accepted: list[Record] = []
        for record in chunk:
            problem = _row_problem(record, manifest, order[record.id] + 1)
            if problem is None:
                accepted.append(record)
            else:
                summary.refused.append(Refusal(record.id, problem))
        uris, problems = _store_images(manifest, accepted, Path(image_dir), max_image_bytes, summary)
        summary.refused.extend(Refusal(row_id, reason) for row_id, reason in problems.items())
        accepted = [record for record in accepted if record.id not in problems]
        for at in range(0, len(accepted), _ROWS_PER_WRITE):
            part = accepted[at : at + _ROWS_PER_WRITE]
            now = utcnow()
            _write_products(session, part, uris, summary, now)
            _write_labels(session, manifest, part, summary, now)
            if progress is not None:
                progress(order[part[-1].id] + 1, len(records))
        if progress is not None:
            progress(start + len(chunk), len(records))
    summary.refused.sort(key=lambda refusal: order[refusal.row_id])
    return summary
