"""Keyset paging's opaque cursor, one wire format for every paged route.

A cursor is ``{"after": <key of the page's last item>}`` as compact JSON, urlsafe base64 without
padding. Clients must pass it back unchanged and never build or parse it; a route decides what its
key is (``key`` below) so the format and the 400 for a foreign cursor are written once.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, TypeVar

from api.errors import BadRequest
from shared.events import parse_json, plain_id

K = TypeVar("K")


class NotAKey(ValueError):
    """Raised by a route's ``key`` when the decoded ``after`` is not one of its keys."""


def encode_cursor(after: Any) -> str:
    """The cursor naming ``after`` (JSON-serialisable: a product_id, or a list for composite keys)."""
    raw = json.dumps({"after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, key: Callable[[Any], K]) -> K:
    """The key a cursor names, as ``key`` builds it from the decoded ``after`` value.

    A cursor this API did not hand out (not base64, not JSON, not ``{"after": ...}``, a string in it
    with a NUL or control character, or ``key`` raising NotAKey) is a 400 naming the ``cursor`` parameter.
    """
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        doc = parse_json(raw)  # bounded: a crafted cursor cannot nest or hold a 5,000-digit number
    except (binascii.Error, ValueError):  # non-ASCII text; JsonRefused is a ValueError too
        doc = None
    try:
        if not isinstance(doc, dict) or set(doc) != {"after"}:
            raise NotAKey(cursor)
        _plain_strings(doc["after"])
        return key(doc["after"])
    except NotAKey:
        raise BadRequest("invalid cursor: pass back the 'next_cursor' of the previous page unchanged",
                         parameter="cursor") from None


def _plain_strings(after: Any) -> None:
    """Every string of a key is one the database can compare: no NUL (a 500 from Postgres) or control."""
    for part in after if isinstance(after, list) else [after]:
        if isinstance(part, str):
            try:
                plain_id(part)
            except ValueError:
                raise NotAKey(after) from None
