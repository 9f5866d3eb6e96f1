"""API-key auth: ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``, then a role check.

401: no key, or one that is malformed, unknown or revoked (the answer never says which, so it
cannot be used to probe key ids). 403: a valid key whose role may not use the route. ``admin``
may use every route.

Verified keys are cached in the process (:class:`shared.apikeys.KeyCache`, keyed by the token's
sha256) for ``TAGGER_API_KEY_CACHE_TTL_S`` seconds (default 5; 0: off), at most
``TAGGER_API_KEY_CACHE_SIZE`` keys (default 1024). Why: the key's database round trip was a large
share of a one-event POST /v1/events. The price: **a revoked key keeps working for up to the TTL**
in each API process that used it just before. Failed tokens are never cached (a new key works at
once, and random tokens cannot grow memory).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.errors import Forbidden, Unauthorized
from api.state import get_state
from shared.apikeys import ROLES, KeyCache, verify
from shared.db.session import session_scope

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer tg_<id>_<secret>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: tg_<id>_<secret>")


_cache_lock = threading.Lock()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, name and role (plain values, no ORM object outlives the session)."""

    key_id: str
    name: str
    role: str


def key_cache(app: FastAPI) -> KeyCache[Principal]:
    """The app's cache of verified keys, made on first use from its :class:`api.config.ApiSettings`
    (one per app, so tests can run several apps with their own databases and TTLs)."""
    cache: KeyCache[Principal] | None = getattr(app.state, "api_key_cache", None)
    if cache is None:
        with _cache_lock:
            cache = getattr(app.state, "api_key_cache", None)
            if cache is None:
                knobs = app.state.tagger.api
                cache = app.state.api_key_cache = KeyCache(knobs.key_cache_ttl_s, knobs.key_cache_size)
    return cache


def _lookup(database_url: str) -> Callable[[str], Principal | None]:
    def load(token: str) -> Principal | None:
        with session_scope(database_url) as session:
            key = verify(session, token)
            return Principal(key.id, key.name, key.role) if key is not None else None
    return load


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits keys with one of ``roles`` (or admin) and returns the caller."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; roles are {ROLES}")
    allowed = frozenset(roles) | {"admin"}

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
    ) -> Principal:
        token = bearer.credentials if bearer is not None else header
        if not token:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <token>' "
                               "or 'X-API-Key: <token>'")
        # A cached key answers on the event loop; only a miss takes a thread (a database round trip).
        cache, token = key_cache(request.app), token.strip()
        principal = cache.cached(token)
        if principal is None:
            principal = await run_in_threadpool(
                cache.get, token, _lookup(get_state(request).settings.database_url))
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        if principal.role not in allowed:
            raise Forbidden(f"role '{principal.role}' may not use this route; it needs "
                            f"{' or '.join(sorted(allowed))}")
        request.state.principal = principal
        return principal

    return dependency
