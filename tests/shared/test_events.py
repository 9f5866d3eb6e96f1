"""The product.uploaded v1 contract: what producers may send, and how a rejection reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from shared.config import Settings
from shared.events import JsonRefused, ProductUploaded, format_errors, parse_json

GOOD = {
    "event_id": "evt-1",
    "product_id": "sku-1",
    "seller_id": "seller-9",
    "title": "Nike Men Navy Blue Running Shoes",
    "occurred_at": "2025-06-01T10:00:00+05:30",
}


def errors_for(**changes: object) -> list[str]:
    """Validate GOOD with changes applied (None removes a key) and return the formatted errors."""
    data = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    with pytest.raises(ValidationError) as info:
        ProductUploaded.model_validate(data)
    return format_errors(info.value)


def test_minimal_event_gets_type_and_version_and_round_trips_through_json() -> None:
    event = ProductUploaded.model_validate(GOOD)
    assert (event.type, event.version) == ("product.uploaded", 1)
    assert event.description is None and event.image_uri is None and event.locale is None
    assert event.occurred_at.utcoffset() == timedelta(hours=5, minutes=30)
    assert ProductUploaded.model_validate(event.model_dump(mode="json")) == event
    assert ProductUploaded.model_validate_json(event.model_dump_json()) == event


def test_full_event_is_accepted_and_title_is_stripped() -> None:
    event = ProductUploaded(
        event_id="e", product_id="p", seller_id="s", title="  Red kurta \n", description="cotton",
        image_uri="s3://catalogue/images/p.jpg", locale="en-IN",
        occurred_at=datetime(2025, 6, 1, tzinfo=UTC),
    )
    assert event.title == "Red kurta"
    assert event.model_dump(mode="json")["occurred_at"] == "2025-06-01T00:00:00Z"


def test_unknown_field_is_rejected_and_named() -> None:
    assert errors_for(colour="red") == ["colour: unknown field (not part of product.uploaded v1)"]


@pytest.mark.parametrize("field", ["event_id", "product_id", "seller_id", "title", "occurred_at"])
def test_required_fields_are_named_when_missing(field: str) -> None:
    assert errors_for(**{field: None}) == [f"{field}: required field is missing"]


def test_title_length_limits() -> None:
    assert ProductUploaded.model_validate({**GOOD, "title": "x" * 500}).title == "x" * 500
    assert errors_for(title="x" * 501) == ["title: String should have at most 500 characters"]
    assert errors_for(title="   ")[0].startswith("title: String should have at least 1 character")


def test_description_limit() -> None:
    assert ProductUploaded.model_validate({**GOOD, "description": "d" * 10_000}).description
    assert errors_for(description="d" * 10_001)[0].startswith("description: String should have at most")


@pytest.mark.parametrize("field", ["event_id", "product_id", "seller_id"])
def test_ids_are_bounded_and_not_blank(field: str) -> None:
    assert errors_for(**{field: "i" * 201})[0].startswith(f"{field}: String should have at most 200")
    assert errors_for(**{field: "  "}) == [f"{field}: must not be blank"]


def test_naive_timestamp_is_rejected() -> None:
    assert errors_for(occurred_at="2025-06-01T10:00:00") == ["occurred_at: Input should have timezone info"]
    for number in (0, 1_700_000_000, 1.5, True):
        assert errors_for(occurred_at=number) == [
            "occurred_at: expected an ISO 8601 date-time string with a timezone, not a number"], number
    with pytest.raises(ValidationError):
        ProductUploaded(**{**GOOD, "occurred_at": datetime(2025, 6, 1)})


def test_aware_timestamp_keeps_its_offset() -> None:
    brasilia = timezone(timedelta(hours=-3))
    event = ProductUploaded(**{**GOOD, "occurred_at": datetime(2025, 6, 1, tzinfo=brasilia)})
    assert event.occurred_at.utcoffset() == timedelta(hours=-3)


@pytest.mark.parametrize("uri", [
    "s3://catalogue/a/b.jpg", "https://cdn.example.com/p/1.jpg", "HTTPS://cdn.example.com/x", "file:///tmp/p.jpg",
])
def test_allowed_image_uri_schemes(uri: str) -> None:
    assert ProductUploaded.model_validate({**GOOD, "image_uri": uri}).image_uri == uri


@pytest.mark.parametrize(("uri", "reason"), [
    ("http://cdn.example.com/p.jpg", "scheme 'http' is not allowed; use s3://, https:// or file://"),
    ("ftp://host/p.jpg", "scheme 'ftp' is not allowed; use s3://, https:// or file://"),
    ("data:image/png;base64,AAAA", "scheme 'data' is not allowed; use s3://, https:// or file://"),
    ("images/p.jpg", "scheme missing is not allowed; use s3://, https:// or file://"),
    ("https:///p.jpg", "https:// URI needs a host"),
    ("s3://catalogue", "s3:// URI needs a key after the bucket"),
])
def test_bad_image_uri_is_rejected_with_the_reason(uri: str, reason: str) -> None:
    assert errors_for(image_uri=uri) == [f"image_uri: {reason}"]


def test_locale_must_look_like_a_language_tag() -> None:
    assert ProductUploaded.model_validate({**GOOD, "locale": "zh-Hant-TW"}).locale == "zh-Hant-TW"
    assert errors_for(locale="English please") == ["locale: expected a language tag like 'en-IN'"]


def test_other_types_and_versions_are_rejected() -> None:
    assert errors_for(version=2) == ["version: Input should be 1"]
    assert errors_for(type="product.deleted") == ["type: Input should be 'product.uploaded'"]


def test_every_problem_is_reported_at_once() -> None:
    errors = errors_for(title="x" * 501, occurred_at="2025-01-01T00:00:00", image_uri="http://h/p", extra=1)
    assert [e.split(":")[0] for e in errors] == ["title", "image_uri", "occurred_at", "extra"]


def test_events_are_immutable() -> None:
    event = ProductUploaded.model_validate(GOOD)
    with pytest.raises(ValidationError):
        event.title = "changed"  # type: ignore[misc]



@pytest.mark.parametrize("field", ["event_id", "product_id", "seller_id", "title", "description"])
def test_nul_is_refused_naming_the_field(field: str) -> None:
    """Postgres text cannot hold NUL: the event is refused at the door, not as a failed batch write."""
    with pytest.raises(ValidationError) as err:
        ProductUploaded.model_validate({**GOOD, field: "a\x00b"})
    assert any(line.startswith(f"{field}: ") and "NUL" in line for line in format_errors(err.value))


# --- issue 11: bounds on occurred_at, ids every route can address, bounded JSON ----------------------

def test_far_future_is_refused_as_it_would_freeze_the_product() -> None:
    (line,) = errors_for(occurred_at="9999-12-31T00:00:00Z")
    assert line.startswith("occurred_at: is more than 300 s in the future (TAGGER_EVENT_MAX_SKEW_S)")
    # The overflow: accepted, then failed its whole batch's write.
    assert errors_for(occurred_at="9999-12-31T23:59:59-14:00") == [
        "occurred_at: out of range once converted to UTC"]


def test_small_clock_skew_is_accepted_and_more_is_not() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=200)
    assert ProductUploaded.model_validate({**GOOD, "occurred_at": soon.isoformat()}).occurred_at == soon
    later = datetime.now(UTC) + timedelta(seconds=400)
    assert "in the future" in errors_for(occurred_at=later.isoformat())[0]


@pytest.mark.parametrize("when", ["0001-01-02T00:00:00Z", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z"])
def test_dates_before_the_earliest_are_refused(when: str) -> None:
    assert errors_for(occurred_at=when) == [
        "occurred_at: is before 2000-01-01T00:00:00+00:00 (TAGGER_EVENT_EARLIEST)"]
    assert errors_for(occurred_at="0001-01-01T00:00:00+14:00") == [
        "occurred_at: out of range once converted to UTC"]


def test_offsets_beyond_real_time_zones_are_refused() -> None:
    assert errors_for(occurred_at="2025-06-01T10:00:00+20:00") == [
        "occurred_at: timezone offset must be within -14:00 and +14:00"]
    assert ProductUploaded.model_validate({**GOOD, "occurred_at": "2025-06-01T10:00:00+14:00"})


def test_bounds_come_from_the_settings_given_in_the_context() -> None:
    strict = Settings(event_earliest=datetime(2025, 7, 1, tzinfo=UTC), event_max_skew_s=0)
    with pytest.raises(ValidationError) as info:
        ProductUploaded.model_validate(GOOD, context={"settings": strict})
    assert format_errors(info.value) == [
        "occurred_at: is before 2025-07-01T00:00:00+00:00 (TAGGER_EVENT_EARLIEST)"]
    assert ProductUploaded.model_validate(GOOD)  # the default settings take it


@pytest.mark.parametrize("field", ["event_id", "product_id", "seller_id"])
@pytest.mark.parametrize(("bad", "reason"), [
    ("a\x00b", "contains a NUL character"), ("a\x01b", "contains a control character"),
    ("a\nb", "contains a control character"), ("a\x7fb", "contains a control character"),
    ("a\x85b", "contains a control character"),
    ("a\ud800b", "Input should be a valid string, unable to parse raw data as a unicode string"),
])
def test_ids_with_control_characters_are_refused(field: str, bad: str, reason: str) -> None:
    (line,) = errors_for(**{field: bad})
    assert line.startswith(f"{field}: {reason}")


@pytest.mark.parametrize("bad", ["a/b", "/", ".", ".."])
def test_product_ids_the_routes_cannot_address_are_refused(bad: str) -> None:
    (line,) = errors_for(product_id=bad)
    assert line.startswith("product_id: must not")


def test_other_ids_may_hold_a_slash_and_product_ids_other_url_characters() -> None:
    event = ProductUploaded.model_validate({**GOOD, "event_id": "a/b", "seller_id": "s/1",
                                            "product_id": "sku 1?#%.x"})
    assert event.product_id == "sku 1?#%.x"


def test_text_with_a_lone_surrogate_is_refused() -> None:
    """Postgres stores UTF-8 only; pydantic's str refuses a lone surrogate from a Python caller."""
    assert errors_for(title="a\udc80b")[0].startswith("title: Input should be a valid string")


@pytest.mark.parametrize(("text", "reason"), [
    ("[" * 2000 + "]" * 2000, "nested deeper than 32 levels"),
    ("[" * 33 + "]" * 33, "nested deeper than 32 levels"),
    ('{"a": ' + "1" * 4301 + "}", "a number is out of range"),
    ('{"a": ' + "9" * 20 + "}", "a number is out of range"),
    ("1e999", "a number is out of range"),
    ("NaN", "not valid JSON"),
    ('"\\ud800"', "not valid JSON"),
    (b'"\xff"', "not valid JSON"),
    ("{} x", "not valid JSON"),
])
def test_parse_json_refuses_what_would_break_a_door(text: str | bytes, reason: str) -> None:
    with pytest.raises(JsonRefused) as info:
        parse_json(text)
    assert str(info.value).startswith(reason)


def test_parse_json_takes_ordinary_documents() -> None:
    assert parse_json("[" * 32 + "]" * 32)
    assert parse_json('{"a": [1, -9223372036854775807, 1.5e300, "\\u00e9\\ud83d\\ude00", null]}') == {
        "a": [1, -9223372036854775807, 1.5e300, "é😀", None]}
