"""Errors the API raises on purpose, and the one place that maps every tagger error to a status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import OperationalError

from shared.errors import PermanentError, TaggerError, TransientError

log = logging.getLogger("tagger.api")


class LimitInfo(BaseModel):
    """The configured limit a 413 passed: its setting's name and value."""

    name: str
    value: int


class ErrorBody(BaseModel):
    """The body of an error the API answers on purpose: ``detail`` for people, the other fields for
    programs; fields may be added."""

    # Documented with responses= on every route, so clients (and the schemathesis run) know the shape;
    # extra="allow": a new field later breaks no client that validates against this schema.
    model_config = ConfigDict(extra="allow")

    detail: str = Field(description="What went wrong and, where it helps, what to do.")
    parameter: str | None = Field(None, description="The query parameter or body field at fault.")
    limit: LimitInfo | None = Field(None, description="413 only: the limit that was passed.")
    index: int | None = Field(None, description="The position of the item at fault in a list.")


class FieldProblem(BaseModel):
    """One problem FastAPI found in a parameter or body before the route ran (its standard format)."""

    model_config = ConfigDict(extra="allow")  # input, ctx, url

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """FastAPI's own 422: a parameter or body of the wrong type or out of range, one entry per problem."""

    detail: list[FieldProblem]


# What each error status means across the API; a route passes (status, text) to say more.
DESCRIPTIONS: dict[int, str] = {
    400: "The request is malformed; ``detail`` says how and ``parameter`` names the culprit if one is.",
    401: "No usable API key (missing, unknown or revoked); send 'Authorization: Bearer <token>' "
         "or 'X-API-Key: <token>'.",
    403: "The key is valid but its role may not use this route.",
    404: "The resource the path names does not exist.",
    413: "A configured limit was passed; ``limit`` names the setting and its value.",
    422: "A parameter or body field is invalid: FastAPI's list of problems, or ``detail`` naming it.",
    500: "Something the service itself needs is missing or unreadable.",
    503: "The database or the broker is briefly unavailable; retry after ``Retry-After`` seconds.",
}
AUTH_ERRORS = (401, 403, 503)  # any route behind a key: the key is checked in the database
# Headers the handlers always send with these statuses (Unauthorized, _tagger_error, _database_down).
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Always 'Bearer'.", "required": True,
                               "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                          "schema": {"type": "string"}}},
}


def responses(*entries: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status (or ``(status, description)``) with its error body model.

    422 may come from FastAPI's own validation as well as from the route, so it documents both shapes."""
    out: dict[int | str, dict[str, Any]] = {}
    for entry in entries:
        status, description = entry if isinstance(entry, tuple) else (entry, DESCRIPTIONS[entry])
        model: Any = ErrorBody | ValidationErrorBody if status == 422 else ErrorBody
        out[status] = {"model": model, "description": description}
        if status in HEADERS:
            out[status]["headers"] = HEADERS[status]
    return out


class HttpError(PermanentError):
    """A request the API refuses; ``status_code`` and ``headers`` go into the response as they are."""

    status_code = 400

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extra = extra


class BadRequest(HttpError):
    """The body is not JSON, or not the shape the route takes."""


class Unauthorized(HttpError):
    """No usable API key (missing, unknown, wrong secret or revoked)."""

    status_code = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(HttpError):
    """A valid key whose role may not use this route."""

    status_code = 403


class NotFound(HttpError):
    """The resource the path names does not exist (the answer says which)."""

    status_code = 404


class InvalidParameter(HttpError):
    """A query parameter with a value the route does not know; the answer names the parameter."""

    status_code = 422


class ServerFault(HttpError):
    """Something the service itself should have (a live model's manifest) is missing or unreadable."""

    status_code = 500


class LimitExceeded(HttpError):
    """A configured limit (body size, batch size) was passed; the answer names the setting."""

    status_code = 413


def _status(exc: TaggerError) -> int:
    if isinstance(exc, HttpError):
        return exc.status_code
    if isinstance(exc, TransientError):
        return 503  # the client may retry: a dependency is briefly down
    if isinstance(exc, PermanentError):
        return 422  # retrying the same request cannot help
    return 500


async def _tagger_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TaggerError)
    status = _status(exc)
    headers = dict(getattr(exc, "headers", None) or {})
    if status == 503:
        headers.setdefault("Retry-After", "5")
    if status >= 500:
        log.warning("request_failed status=%d error=%s", status, type(exc).__name__)
    body: dict[str, Any] = {"detail": str(exc), **getattr(exc, "extra", {})}
    return JSONResponse(body, status_code=status, headers=headers or None)


async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
    # Connection refused, server restarting, pool timeout: the client should retry, not give up.
    log.warning("database_unavailable error=%s", type(exc).__name__)
    return JSONResponse({"detail": "database unavailable; retry later"}, status_code=503,
                        headers={"Retry-After": "5"})


def install(app: FastAPI) -> None:
    """Register the handlers: HttpError → its status, TransientError → 503, PermanentError → 422."""
    app.add_exception_handler(TaggerError, _tagger_error)
    app.add_exception_handler(OperationalError, _database_down)
