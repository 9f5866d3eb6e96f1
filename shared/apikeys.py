"""API keys for the HTTP API: created and revoked by operators, verified per request; never commits.

A token reads ``tg_<key_id>_<secret>``: the id finds the row, the secret is checked against its
stored sha256. Only the hash is stored, so a leaked database does not leak working keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import API_KEY_ROLES, ApiKey
from shared.errors import PermanentError

TOKEN_PREFIX = "tg"
ROLES = API_KEY_ROLES
# Hashed when a token names no known key, so an unknown id costs the same time as a wrong secret.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


class ApiKeyError(PermanentError):
    """A key operation cannot be done as asked (unknown role, unknown or already revoked key)."""


def _hash(secret: str) -> str:
    # sha256, not bcrypt/argon2: the secret is 32 random bytes (256 bits), so there is no dictionary
    # to guess from and a deliberately slow hash would only slow down every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, name: str, role: str) -> tuple[str, str]:
    """Add a key; returns ``(key_id, token)``. The token exists only in this return value: show it once."""
    if role not in ROLES:
        raise ApiKeyError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if not name.strip() or not name.isprintable():
        raise ApiKeyError("a key needs a printable name (who or what uses it)")
    key_id = secrets.token_hex(8)  # hex: never contains the '_' that separates the token's parts
    secret = secrets.token_urlsafe(32)
    session.add(ApiKey(id=key_id, name=name.strip(), role=role, key_hash=_hash(secret)))
    session.flush()
    return key_id, f"{TOKEN_PREFIX}_{key_id}_{secret}"


def verify(session: Session, token: str) -> ApiKey | None:
    """The active key a token belongs to, or None (malformed, unknown, wrong secret or revoked)."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not key_id or not secret:
        return None
    key = session.get(ApiKey, key_id)
    expected = key.key_hash if key is not None else _DUMMY_HASH
    matches = hmac.compare_digest(expected, _hash(secret))
    if key is None or not matches or key.revoked_at is not None:
        return None
    return key


def revoke(session: Session, key_id: str) -> ApiKey:
    """Mark a key revoked from now on; revoking a revoked key keeps its first revocation time."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise ApiKeyError(f"no API key with id {key_id!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def list_keys(session: Session, *, include_revoked: bool = True) -> Sequence[ApiKey]:
    """Every key, oldest first (no secrets: only hashes are stored)."""
    stmt = sa.select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return session.scalars(stmt).all()
