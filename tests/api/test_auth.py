"""Every route but health needs a key: 401 without a usable one, 403 for the wrong role."""

from __future__ import annotations

from fastapi.testclient import TestClient

from shared.apikeys import revoke, verify
from shared.db.session import session_scope
from tests.api.conftest import event


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


def test_revoked_key_is_401(client: TestClient, tokens: dict[str, str], db_url: str) -> None:
    token = tokens["producer"]
    ok = client.post("/v1/events", json=event(1), headers={"X-API-Key": token})
    assert ok.status_code == 202, ok.text
    with session_scope(db_url) as session:
        key = verify(session, token)
        assert key is not None
        revoke(session, key.id)
    response = client.post("/v1/events", json=event(2), headers={"X-API-Key": token})
    assert response.status_code == 401


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
