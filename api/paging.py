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

K = TypeVar("K")


class NotAKey(ValueError):
    """Raised by a route's ``key`` when the decoded ``after`` is not one of its keys."""


def encode_cursor(after: Any) -> str:
    """The cursor naming ``after`` (JSON-serialisable: a product_id, or a list for composite keys)."""
    raw = json.dumps({"after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, key: Callable[[Any], K]) -> K:
    """The key a cursor names, as ``key`` builds it from the decoded ``after`` value.

    A cursor this API did not hand out (not base64, not JSON, not ``{"after": ...}``, or ``key``
    raising NotAKey) is a 400 naming the ``cursor`` parameter.
    """
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        doc = json.loads(raw.decode())
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        doc = None
    try:
        if not isinstance(doc, dict) or set(doc) != {"after"}:
            raise NotAKey(cursor)
        return key(doc["after"])
    except NotAKey:
        raise BadRequest("invalid cursor: pass back the 'next_cursor' of the previous page unchanged",
                         parameter="cursor") from None
