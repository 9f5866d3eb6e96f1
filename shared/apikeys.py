"""API keys for the HTTP API: created and revoked by operators, verified per request; never commits.

A token reads ``tg_<key_id>_<secret>``: the id finds the row, the secret is checked against its
stored sha256. Only the hash is stored, so a leaked database does not leak working keys.

:class:`KeyCache` lets a process skip the database for a key it verified less than ``ttl_s`` ago,
so revoking a key takes effect everywhere within that TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import sqlalchemy as sa
from cachetools import TTLCache
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import API_KEY_ROLES, ApiKey
from shared.errors import PermanentError

TOKEN_PREFIX = "tg"
ROLES = API_KEY_ROLES
# Hashed when a token names no known key, so an unknown id costs the same time as a wrong secret.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()
V = TypeVar("V")


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


class KeyCache(Generic[V]):
    """What a token verified as, for ``ttl_s`` seconds, so a busy client costs one database round trip
    per TTL instead of one per request (POST /v1/events with one event each: measured in bench/ingest.py).

    - Keyed by the token's sha256, never the token: a heap dump or a debugger shows no working key.
    - Only tokens that verified are kept. A failed one (unknown, wrong secret, revoked) is looked up
      again every time: an attacker sending random tokens adds nothing to memory, and a key created
      just now works at once.
    - At most ``max_entries`` keys (the least recently used one goes first): a bound even if a very
      large number of valid keys were used at once.
    - A revoked or deleted key keeps working in this process until its entry is ``ttl_s`` old: the
      TTL is the longest revocation delay. ``ttl_s = 0`` turns the cache off.

    Thread-safe (a miss is loaded on the thread pool). ``clock`` is ``time.monotonic``."""

    def __init__(self, ttl_s: float, max_entries: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise ValueError("ttl_s must be >= 0 and max_entries >= 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        # cachetools' TTL + LRU cache (digest -> value); it is not thread-safe on its own.
        self._entries: TTLCache[bytes, V] = TTLCache(max_entries, ttl_s or 1.0, timer=clock)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)

    def cached(self, token: str) -> V | None:
        """The cached value of ``token`` while fresh, else None; never loads (so never blocks: an
        async caller asks this first and takes a thread only for :meth:`get`)."""
        if self.ttl_s == 0:
            return None
        return self._fresh(hashlib.sha256(token.encode()).digest())

    def _fresh(self, digest: bytes) -> V | None:
        with self._lock:
            return self._entries.get(digest)  # None once expired (TTLCache drops it)

    def get(self, token: str, load: Callable[[str], V | None]) -> V | None:
        """The cached value of ``token`` while fresh, else ``load(token)`` (kept only if not None)."""
        if self.ttl_s == 0:
            return load(token)
        digest = hashlib.sha256(token.encode()).digest()
        value = self._fresh(digest)
        if value is not None:
            return value
        value = load(token)  # outside the lock: one slow database call must not stall every request
        if value is not None:
            with self._lock:
                self._entries[digest] = value
        return value

    def clear(self) -> None:
        """Forget every key (e.g. after revoking one in this process)."""
        with self._lock:
            self._entries.clear()
