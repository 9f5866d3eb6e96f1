"""``tagger models list | show | promote | rollback`` against Postgres and a local object store."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from cli import models as registry_commands
from shared.config import DEFAULT_MODEL_DIR, get_settings
from shared.db.migrate import upgrade
from shared.db.session import session_scope
from shared.registry import ensure_default_registered, list_versions, register
from shared.storage import LocalStore
from tests.cli.root import root_with
from tests.shared.registry.conftest import overwrite

SHIPPED = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
DEFAULT = SHIPPED["version"]


class Cli:
    def __init__(self, app: typer.Typer, url: str, store: LocalStore) -> None:
        self.app, self.url, self.store = app, url, store

    def __call__(self, *args: str, code: int = 0) -> str:
        result = CliRunner().invoke(self.app, ["models", *args])
        assert result.exit_code == code, result.output
        return result.output

    def statuses(self) -> dict[str, str]:
        with session_scope(self.url) as session:
            return {r.version: r.status for r in list_versions(session)}


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, make_database: Callable[[str], str], tmp_path: Path,
        make_model: Callable[[str], Path]) -> Iterator[Cli]:
    """A migrated Postgres database holding the shipped model (live) and a candidate ``v2``."""
    url = make_database("postgresql")
    upgrade(url)
    store = LocalStore(tmp_path / "objects")
    monkeypatch.setenv("TAGGER_DATABASE_URL", url)
    monkeypatch.setenv("TAGGER_OBJECT_STORE_URL", f"file://{store.root}")
    monkeypatch.setenv("TAGGER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(registry_commands, "out", Console(width=200))  # table columns unabridged
    get_settings.cache_clear()
    with session_scope(url) as session:
        ensure_default_registered(session, store)
        register(session, store, make_model("v2"), parent=DEFAULT, reason="trained on 40 new labels")
    root = root_with(registry_commands.register)
    yield Cli(root, url, store)
    get_settings.cache_clear()


def test_list(cli: Cli) -> None:
    out = cli("list")
    lines = {line.split()[1]: line for line in out.splitlines() if line.split()[1:2] in ([DEFAULT], ["v2"])}
    assert "live" in lines[DEFAULT] and "candidate" in lines["v2"]
    assert DEFAULT in lines["v2"]  # the parent column
    # Headline: mean fused accuracy over the axes, as the manifest reports it.
    both = SHIPPED["metrics"]["modalities"]["both"]
    acc = sum(m["accuracy"] for m in both.values()) / len(both)
    assert f"{acc:.3f}" in lines[DEFAULT]


def test_show(cli: Cli) -> None:
    doc = json.loads(cli("show", "v2"))
    assert (doc["version"], doc["status"], doc["parent_version"]) == ("v2", "candidate", DEFAULT)
    assert doc["uri"] == cli.store.uri("models/v2")
    assert doc["reason"] == "trained on 40 new labels"
    assert doc["manifest"]["metrics"] == SHIPPED["metrics"]
    assert doc["manifest"]["training"]["fingerprint"] == SHIPPED["training"]["fingerprint"]
    assert "unknown model version v9" in cli("show", "v9", code=2)


def test_promote_then_rollback(cli: Cli) -> None:
    assert f"v2 is live (was: {DEFAULT})" in cli("promote", "v2", "--reason", "gate passed")
    assert cli.statuses() == {DEFAULT: "retired", "v2": "live"}
    assert "already live" in cli("promote", "v2", code=2)

    assert f"{DEFAULT} is live again (v2 retired)" in cli("rollback", "--reason", "bad colours")
    assert cli.statuses() == {DEFAULT: "live", "v2": "retired"}
    assert "no earlier live version" in cli("rollback", code=2)


def test_promote_of_a_corrupt_artifact_fails_and_changes_nothing(cli: Cli) -> None:
    overwrite(cli.store, "models/v2/head.safetensors", b"\0" * 100)
    out = cli("promote", "v2", code=2)
    assert "error:" in out and "head.safetensors" in out
    assert cli.statuses() == {DEFAULT: "live", "v2": "candidate"}


def test_list_of_an_empty_registry(cli: Cli, make_database: Callable[[str], str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url = make_database("postgresql")
    upgrade(url)
    monkeypatch.setenv("TAGGER_DATABASE_URL", url)
    get_settings.cache_clear()
    assert "no model versions registered yet" in cli("list")


def test_unmigrated_database_is_a_clean_error(cli: Cli, make_database: Callable[[str], str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGGER_DATABASE_URL", make_database("postgresql"))
    get_settings.cache_clear()
    assert "error:" in cli("list", code=2)
