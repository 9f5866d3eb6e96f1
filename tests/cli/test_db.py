"""``tagger db upgrade`` and ``tagger db current`` against the database the settings name."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import typer
from typer.testing import CliRunner

from cli.db import register
from shared.config import get_settings
from tests.cli.root import root_with


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, make_database: Callable[[str], str]) -> Iterator[typer.Typer]:
    monkeypatch.setenv("TAGGER_DATABASE_URL", make_database("sqlite"))
    get_settings.cache_clear()
    root = root_with(register)
    yield root
    get_settings.cache_clear()


def test_upgrade_then_current(app: typer.Typer) -> None:
    runner = CliRunner()
    behind = runner.invoke(app, ["db", "current"])
    assert behind.exit_code == 1, behind.output
    assert "base (behind: head is 0006)" in behind.output

    upgraded = runner.invoke(app, ["db", "upgrade", "--revision", "head"])
    assert upgraded.exit_code == 0, upgraded.output
    assert "database at 0006" in upgraded.output

    current = runner.invoke(app, ["db", "current"])
    assert current.exit_code == 0, current.output
    assert "0006 (head)" in current.output


def test_unknown_revision_fails_cleanly(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["db", "upgrade", "--revision", "9999"])
    assert result.exit_code == 2
    assert "error:" in result.output
    assert "9999" in result.output
