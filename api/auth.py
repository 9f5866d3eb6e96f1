"""API-key auth: ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``, then a role check.

401: no key, or one that is malformed, unknown or revoked (the answer never says which, so it
cannot be used to probe key ids). 403: a valid key whose role may not use the route. ``admin``
may use every route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.errors import Forbidden, Unauthorized
from api.state import get_state
from shared.apikeys import ROLES, verify
from shared.db.session import session_scope

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer tg_<id>_<secret>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: tg_<id>_<secret>")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, name and role (plain values, no ORM object outlives the session)."""

    key_id: str
    name: str
    role: str


def require(*roles: str) -> Callable[..., Principal]:
    """A dependency that admits keys with one of ``roles`` (or admin) and returns the caller."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; roles are {ROLES}")
    allowed = frozenset(roles) | {"admin"}

    def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
    ) -> Principal:
        token = bearer.credentials if bearer is not None else header
        if not token:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <token>' "
                               "or 'X-API-Key: <token>'")
        with session_scope(get_state(request).settings.database_url) as session:
            key = verify(session, token.strip())
            principal = Principal(key.id, key.name, key.role) if key is not None else None
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        if principal.role not in allowed:
            raise Forbidden(f"role '{principal.role}' may not use this route; it needs "
                            f"{' or '.join(sorted(allowed))}")
        request.state.principal = principal
        return principal

    return dependency
