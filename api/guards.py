"""What every request passes before a route sees it: parameters the database can store, a bounded body.

- :func:`plain_parameters` (an app-wide dependency): a path or query parameter with a NUL or another
  control character is a 422 naming the parameter, never a database error (Postgres text cannot
  hold NUL) turned into a 500.
- :class:`GuardedRoute` (each router's ``route_class``): a route that takes a body reads it within
  ``TAGGER_API_MAX_BODY_BYTES`` (413 naming the setting), and a JSON body FastAPI would parse is
  parsed by :func:`shared.events.parse_json` instead (depth, number size: a 400 naming the body).
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from api.errors import BadRequest, InvalidParameter, LimitExceeded
from api.state import get_state
from shared.events import JsonRefused, parse_json, plain_id


async def plain_parameters(request: Request) -> None:
    """Refuse control characters (NUL included) in any path or query parameter, naming it.
    Async because it never blocks: a sync dependency costs every request a thread-pool hop."""
    params = [*request.path_params.items(), *request.query_params.multi_items()]
    for name, value in params:
        try:
            plain_id(str(value))
        except ValueError as exc:
            raise InvalidParameter(f"{name}: {exc}", parameter=name) from None
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):  # a query parameter's own name
            raise InvalidParameter("query: a parameter name contains a control character")


def too_large(size: int, limit: int, *, at_least: bool = False) -> LimitExceeded:
    """The 413 for a body over ``limit``: the same words and ``limit`` field on every route."""
    return LimitExceeded(
        f"request body of {'more than ' if at_least else ''}{size if not at_least else limit} bytes exceeds "
        f"the limit of {limit} bytes (max_body_bytes, TAGGER_API_MAX_BODY_BYTES)",
        limit={"name": "max_body_bytes", "value": limit},
    )


async def read_body(request: Request) -> bytes:
    """The body, refused as soon as it is known to pass the limit (header first, then while reading).

    Kept on the request as Starlette does, so a later ``request.body()`` or ``stream()`` reuses it."""
    if hasattr(request, "_body"):
        return request._body
    limit = get_state(request).api.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # a lying or absent Content-Length (chunked upload) is caught here
            raise too_large(size, limit, at_least=True)
        chunks.append(chunk)
    request._body = b"".join(chunks)
    return request._body


def _is_json(request: Request) -> bool:
    """Whether FastAPI would parse this body as JSON (its own test: no type, or application/*json)."""
    value = request.headers.get("content-type")
    if not value:
        return True
    message = email.message.Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json"))


class GuardedRoute(APIRoute):
    """A route whose body (if it takes one) is read within the size limit and parsed with bounds."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        parses_body = self.body_field is not None  # FastAPI reads and validates the body itself

        async def guarded(request: Request) -> Response:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                body = await read_body(request)
                if parses_body and body and _is_json(request):
                    try:
                        # Starlette's request.json() returns this instead of running json.loads, whose
                        # recursion and 4,300-digit limits surface as 500s or a bare "error parsing".
                        request._json = parse_json(body)
                    except JsonRefused as exc:
                        raise BadRequest(f"body: {exc}", parameter="body") from None
            return await handler(request)

        return guarded
