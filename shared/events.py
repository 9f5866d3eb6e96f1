"""The ``product.uploaded`` v1 event: the one contract between seller services and the tagging workers.

Producers validate with it before sending and the worker validates again on receipt, so a message
that reaches the queue has the same shape everywhere. Unknown fields are rejected (a typo such as
``imageUri`` must not silently drop the photo), and every error names its field. Files of events
(JSONL or CSV) are read and validated here too, line by line, for any producer that sends in bulk.
"""

from __future__ import annotations

import csv
import math
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import from_json

from shared.config import Settings, get_settings
from shared.errors import PermanentError

EVENT_TYPE = "product.uploaded"
IMAGE_SCHEMES = ("s3", "https", "file")
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
CSV_SUFFIXES = {".csv"}

# Real-world UTC offsets run from -12:00 to +14:00; a wider one is a producer bug (and Postgres refuses
# offsets past 15:59).
MAX_UTC_OFFSET = timedelta(hours=14)


def storable_text(value: str) -> str:
    """Text Postgres can store: no NUL (pydantic's str already refuses lone surrogates)."""
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


def plain_id(value: str) -> str:
    """An id: storable and free of control characters (C0, DEL, C1), which no log or URL shows faithfully."""
    storable_text(value)
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("contains a control character")
    return value


def path_id(value: str) -> str:
    """An id that is one URL path segment: every route (/v1/products/{product_id}/...) can address it."""
    plain_id(value)
    if "/" in value:
        raise ValueError("must not contain '/' (the API's /v1/products/{product_id} routes could not "
                         "address it)")
    if value in (".", ".."):
        raise ValueError("must not be '.' or '..' (URL clients rewrite those path segments)")
    return value


# Ids are opaque, but a blank one would make every blank-id event the "same" event to the dedupe.
Id = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S"), AfterValidator(plain_id)]
ProductId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S"),
                      AfterValidator(path_id)]
Text = Annotated[str, AfterValidator(storable_text)]
Locale = Annotated[str, StringConstraints(max_length=35, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{1,8})*$")]


class ProductUploaded(BaseModel):
    """A seller created or changed a product; ``event_id`` makes redelivery idempotent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["product.uploaded"] = EVENT_TYPE
    version: Literal[1] = 1
    event_id: Id = Field(description="Idempotency key: the same id is tagged at most once.")
    product_id: ProductId = Field(description="Opaque, but one URL path segment: no '/', not '.' or '..', "
                                  "no control characters.")
    seller_id: Id
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    description: Annotated[str, Field(max_length=10_000)] | None = None
    image_uri: Annotated[str, Field(max_length=2048)] | None = Field(
        None, description="s3://bucket/key, https://host/path or file:///path (the worker decides "
        "whether hosts, buckets and file:// are allowed).",
    )
    locale: Locale | None = Field(None, description="BCP 47-like tag, e.g. 'en-IN'.")
    occurred_at: AwareDatetime = Field(
        description="When the upload happened; must carry a timezone (offset within ±14:00), be no earlier "
        "than TAGGER_EVENT_EARLIEST (default 2000-01-01Z) and no later than now + TAGGER_EVENT_MAX_SKEW_S "
        "(default 300 s).")

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _date_time_not_number(cls, value: object) -> object:
        """A number is not a time: pydantic's lax mode would read 0 as 1970-01-01Z, hiding a producer bug."""
        if isinstance(value, int | float):
            raise ValueError("expected an ISO 8601 date-time string with a timezone, not a number")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _sane_time(cls, value: datetime, info: ValidationInfo) -> datetime:
        """Within the settings' bounds: a far-future date would make every later update of the product
        "stale" (frozen for ever), and a date near year 1 or 9999 overflows once moved to UTC."""
        settings: Settings = (info.context or {}).get("settings") or get_settings()
        offset = value.utcoffset()
        if offset is None or abs(offset) > MAX_UTC_OFFSET:
            raise ValueError("timezone offset must be within -14:00 and +14:00")
        try:
            utc = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("out of range once converted to UTC") from None
        if utc < settings.event_earliest:
            raise ValueError(f"is before {settings.event_earliest.isoformat()} (TAGGER_EVENT_EARLIEST)")
        latest = datetime.now(UTC) + timedelta(seconds=settings.event_max_skew_s)
        if utc > latest:
            raise ValueError(f"is more than {settings.event_max_skew_s:g} s in the future "
                             "(TAGGER_EVENT_MAX_SKEW_S); send the time of the upload, with its offset")
        return value

    @field_validator("title", "description", "image_uri", "locale")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        """Postgres text cannot hold NUL: refuse it here, naming the field, not as a 500 at the write."""
        return None if value is None else storable_text(value)

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


# --- JSON with bounds, for every door that parses a body or a line -------------------------------------

# An event is two levels deep (a batch of objects); 32 leaves room for any other body this API takes.
MAX_JSON_DEPTH = 32
# No field of any body is a number beyond 64 bits; a 5,000-digit integer costs quadratic time to print.
MAX_JSON_INT = 2**63 - 1


class JsonRefused(ValueError):
    """The text is not JSON, or is JSON beyond the bounds above; the message says which, for a person."""


class JsonTooDeep(JsonRefused):
    """Nested deeper than :data:`MAX_JSON_DEPTH`: no event looks like that."""


def parse_json(data: str | bytes) -> Any:
    """Parse JSON (pydantic-core's jiter: no recursion, lone surrogates and invalid UTF-8 refused) and
    check its bounds: depth at most MAX_JSON_DEPTH, integers within 64 bits, no NaN or infinity."""
    try:
        doc = from_json(data, allow_inf_nan=False, cache_strings=False)
    except ValueError as exc:  # jiter stops at its own depth of 200 and at integers of 4,300 digits
        reason = str(exc)
        if reason.startswith("recursion limit exceeded"):
            raise JsonTooDeep(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
        if reason.startswith("number out of range"):
            raise JsonRefused(f"a number is out of range (integers up to {MAX_JSON_INT})") from None
        raise JsonRefused(f"not valid JSON ({reason})") from None
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise JsonTooDeep(f"nested deeper than {MAX_JSON_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
        elif isinstance(value, int) and abs(value) > MAX_JSON_INT:
            raise JsonRefused(f"a number is out of range (integers up to {MAX_JSON_INT})")
        elif isinstance(value, float) and not math.isfinite(value):
            raise JsonRefused("a number is out of range (too large for a double)")
    return doc


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
                row = parse_json(line)
            except JsonTooDeep as exc:  # not an event file at all: refuse the file, send nothing
                raise InputUnusable(f"{path}: line {lineno}: {exc}; not a file of events") from None
            except JsonRefused as exc:
                yield lineno, f"line: {exc}"
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
