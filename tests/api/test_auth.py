"""Every route but health needs a key: 401 without a usable one, 403 for the wrong role."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import key_cache
from shared.apikeys import revoke, verify
from shared.config import Settings
from shared.db.session import session_scope
from tests.api.conftest import LIMITS, event


@contextmanager
def _client_with_ttl(app_settings: Settings, ttl_s: float) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings, LIMITS.model_copy(update={"key_cache_ttl_s": ttl_s}))) as c:
        yield c


def test_missing_key_is_401(client: TestClient) -> None:
    response = client.post("/v1/events", json=event(1))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "missing API key" in response.json()["detail"]


def test_bad_keys_are_401(client: TestClient, tokens: dict[str, str]) -> None:
    good = tokens["producer"]
    wrong_secret = good[:-4] + ("aaaa" if not good.endswith("aaaa") else "bbbb")
    for token in ("nonsense", "tg_unknown_secret", wrong_secret, "tg__", good + "x"):
        response = client.post("/v1/events", json=event(1), headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
        assert response.json()["detail"] == "invalid or revoked API key"


def _revoke(db_url: str, token: str) -> None:
    with session_scope(db_url) as session:
        key = verify(session, token)
        assert key is not None
        revoke(session, key.id)


def test_revoked_key_is_401_within_the_cache_ttl(app_settings: Settings, tokens: dict[str, str],
                                                  db_url: str) -> None:
    """A revoked key is refused once its cache entry is older than TAGGER_API_KEY_CACHE_TTL_S (real
    Postgres, the revocation committed by another session, as ``tagger keys revoke`` does)."""
    with _client_with_ttl(app_settings, 1.0) as client:
        _revoked_within_ttl(client, tokens["producer"], db_url)


def _revoked_within_ttl(client: TestClient, token: str, db_url: str) -> None:
    ok = client.post("/v1/events", json=event(1), headers={"X-API-Key": token})
    assert ok.status_code == 202, ok.text
    assert key_cache(client.app).ttl_s == 1.0
    _revoke(db_url, token)
    revoked_at = time.monotonic()
    # Within the TTL the process still trusts what it verified (the documented price of the cache).
    still = client.post("/v1/events", json=event(2), headers={"X-API-Key": token})
    if time.monotonic() - revoked_at < 0.9:  # a very slow machine may already be past the TTL
        assert still.status_code == 202, still.text
    time.sleep(max(0.0, revoked_at + 1.05 - time.monotonic()))
    response = client.post("/v1/events", json=event(3), headers={"X-API-Key": token})
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid or revoked API key"


def test_revoked_key_is_401_at_once_without_cache(app_settings: Settings, tokens: dict[str, str],
                                                   db_url: str) -> None:
    token = tokens["producer"]
    with _client_with_ttl(app_settings, 0) as client:
        ok = client.post("/v1/events", json=event(1), headers={"X-API-Key": token})
        assert ok.status_code == 202, ok.text
        _revoke(db_url, token)
        response = client.post("/v1/events", json=event(2), headers={"X-API-Key": token})
        assert response.status_code == 401


def test_cache_keeps_only_verified_keys_by_hash(client: TestClient, tokens: dict[str, str]) -> None:
    """Bad tokens leave nothing behind (no memory growth from guessing); a good one is kept under its
    sha256, never as the token itself."""
    for n in range(50):
        bad = client.post("/v1/events", json=event(n), headers={"X-API-Key": f"tg_{n:016x}_guess{n}"})
        assert bad.status_code == 401
    cache = key_cache(client.app)
    assert len(cache) == 0
    token = tokens["producer"]
    assert client.post("/v1/events", json=event(1), headers={"X-API-Key": token}).status_code == 202
    assert len(cache) == 1
    assert token.encode() not in repr(cache._entries).encode() and token not in repr(cache._entries)


def test_wrong_role_is_403(client: TestClient, tokens: dict[str, str]) -> None:
    for role in ("reader", "reviewer"):
        response = client.post("/v1/events", json=event(1),
                               headers={"Authorization": f"Bearer {tokens[role]}"})
        assert response.status_code == 403, role
        assert f"role '{role}'" in response.json()["detail"]


def test_admin_may_do_everything(client: TestClient, tokens: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    response = client.post("/v1/events", json=event(1), headers=headers)
    assert response.status_code == 202, response.text


def test_key_is_stored_hashed(tokens: dict[str, str], db_url: str) -> None:
    token = tokens["producer"]
    secret = token.split("_", 2)[2]
    with session_scope(db_url) as session:
        key = verify(session, token)
        assert key is not None
        assert secret not in key.key_hash and len(key.key_hash) == 64
