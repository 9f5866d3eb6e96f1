"""``tagger keys create|list|revoke`` against the database the settings name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from cli.keys import register
from shared.apikeys import verify
from shared.config import get_settings
from shared.db.session import session_scope
from tests.cli.root import root_with


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[typer.Typer]:
    monkeypatch.setenv("TAGGER_DATABASE_URL", db_url)
    get_settings.cache_clear()
    root = root_with(register)
    yield root
    get_settings.cache_clear()


def test_create_list_revoke(app: typer.Typer, db_url: str) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "seller-service", "--role", "producer"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("tg_")
    with session_scope(db_url) as session:
        key = verify(session, token)
        assert key is not None and key.role == "producer" and key.name == "seller-service"
        key_id = key.id

    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
    assert key_id in listed.output and "seller-service" in listed.output
    assert token.split("_", 2)[2] not in listed.output

    revoked = runner.invoke(app, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0, revoked.output
    with session_scope(db_url) as session:
        assert verify(session, token) is None
    assert key_id not in runner.invoke(app, ["keys", "list", "--active"]).output


def test_bad_role_and_unknown_key_fail_cleanly(app: typer.Typer) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["keys", "create", "x", "--role", "root"])
    assert bad.exit_code == 2 and "unknown role 'root'" in bad.output
    missing = runner.invoke(app, ["keys", "revoke", "nope"])
    assert missing.exit_code == 2 and "no API key with id 'nope'" in missing.output
