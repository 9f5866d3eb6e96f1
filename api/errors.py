"""Errors the API raises on purpose, and the one place that maps every tagger error to a status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from shared.errors import PermanentError, TaggerError, TransientError

log = logging.getLogger("tagger.api")


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
