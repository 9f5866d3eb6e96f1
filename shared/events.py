"""The ``product.uploaded`` v1 event: the one contract between seller services and the tagging workers.

Producers validate with it before sending and the worker validates again on receipt, so a message
that reaches the queue has the same shape everywhere. Unknown fields are rejected (a typo such as
``imageUri`` must not silently drop the photo), and every error names its field. Files of events
(JSONL or CSV) are read and validated here too, line by line, for any producer that sends in bulk.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from shared.errors import PermanentError

EVENT_TYPE = "product.uploaded"
IMAGE_SCHEMES = ("s3", "https", "file")
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
CSV_SUFFIXES = {".csv"}

# Ids are opaque, but a blank one would make every blank-id event the "same" event to the dedupe.
Id = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]
Locale = Annotated[str, StringConstraints(max_length=35, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{1,8})*$")]


class ProductUploaded(BaseModel):
    """A seller created or changed a product; ``event_id`` makes redelivery idempotent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["product.uploaded"] = EVENT_TYPE
    version: Literal[1] = 1
    event_id: Id = Field(description="Idempotency key: the same id is tagged at most once.")
    product_id: Id
    seller_id: Id
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    description: Annotated[str, Field(max_length=10_000)] | None = None
    image_uri: Annotated[str, Field(max_length=2048)] | None = Field(
        None, description="s3://bucket/key, https://host/path or file:///path (the worker decides "
        "whether hosts, buckets and file:// are allowed).",
    )
    locale: Locale | None = Field(None, description="BCP 47-like tag, e.g. 'en-IN'.")
    occurred_at: AwareDatetime = Field(description="When the upload happened; must carry a timezone.")

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _date_time_not_number(cls, value: object) -> object:
        """A number is not a time: pydantic's lax mode would read 0 as 1970-01-01Z, hiding a producer bug."""
        if isinstance(value, int | float):
            raise ValueError("expected an ISO 8601 date-time string with a timezone, not a number")
        return value

    @field_validator("event_id", "product_id", "seller_id", "title", "description", "image_uri", "locale")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        """Postgres text cannot hold NUL: refuse it here, naming the field, not as a 500 at the write."""
        if value is not None and "\x00" in value:
            raise ValueError("contains a NUL character")
        return value

    @field_validator("image_uri")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        """Reject schemes the fetcher has no safe path for (http, ftp, data:, …) at the producer."""
        if value is None:
            return None
        parts = urlsplit(value)
        scheme = parts.scheme.lower()
        if scheme not in IMAGE_SCHEMES:
            shown = f"'{scheme}'" if scheme else "missing"
            raise ValueError(f"scheme {shown} is not allowed; use s3://, https:// or file://")
        if scheme in ("s3", "https") and not parts.netloc:
            raise ValueError(f"{scheme}:// URI needs a {'bucket' if scheme == 's3' else 'host'}")
        if scheme == "s3" and not parts.path.strip("/"):
            raise ValueError("s3:// URI needs a key after the bucket")
        if scheme == "file" and not parts.path:
            raise ValueError("file:// URI needs a path")
        return value


_FRIENDLY = {
    "extra_forbidden": "unknown field (not part of product.uploaded v1)",
    "missing": "required field is missing",
}
# A regex in an error message helps nobody; say what was expected instead.
_PATTERN_REASONS = {"locale": "expected a language tag like 'en-IN'"}


def format_errors(exc: ValidationError) -> list[str]:
    """Turn a pydantic error into ``"field: reason"`` lines an operator can act on without a traceback."""
    lines = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "event"
        if err["type"] == "string_pattern_mismatch":
            reason = _PATTERN_REASONS.get(field, "must not be blank")
        else:
            reason = _FRIENDLY.get(err["type"]) or err["msg"].removeprefix("Value error, ")
        lines.append(f"{field}: {reason}")
    return lines


# --- event files (JSONL or CSV), as `tagger publish` and batch producers read them -----------------

class InputUnusable(PermanentError):
    """The file as a whole cannot be read (missing, wrong type, wrong encoding)."""


@dataclass
class Validated:
    """The outcome of reading a file: events to send and, per rejected line, its reasons."""

    accepted: list[ProductUploaded] = field(default_factory=list)
    rejected: list[tuple[int, list[str]]] = field(default_factory=list)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, f"line: not valid JSON ({exc.msg} at column {exc.colno})"
                continue
            yield lineno, row if isinstance(row, dict) else "line: expected a JSON object"


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            return
        start = reader.line_num + 1
        for row in reader:
            if None in row:
                yield start, "line: more cells than header columns"
            else:
                # An empty cell means "absent", so optional fields stay None and required ones say missing.
                yield start, {k: v for k, v in row.items() if k and v not in (None, "")}
            start = reader.line_num + 1


def read_events(path: Path) -> Validated:
    """Validate every line of a JSONL or CSV file; never stops at the first bad line."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        rows = _jsonl_rows(path)
    elif suffix in CSV_SUFFIXES:
        rows = _csv_rows(path)
    else:
        raise InputUnusable(f"{path}: unknown extension {suffix or '(none)'!r}; use .jsonl, .ndjson or .csv")
    result = Validated()
    try:
        for lineno, row in rows:
            if isinstance(row, str):
                result.rejected.append((lineno, [row]))
                continue
            try:
                result.accepted.append(ProductUploaded.model_validate(row))
            except ValidationError as exc:
                result.rejected.append((lineno, format_errors(exc)))
    except FileNotFoundError:
        raise InputUnusable(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputUnusable(f"{path}: cannot read ({exc})") from None
    return result
