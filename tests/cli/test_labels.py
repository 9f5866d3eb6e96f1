"""``tagger labels import``: a summary table, refusals with reasons, and exit codes 0 / 1 / 2."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from cli.labels import register
from shared.config import get_settings
from shared.db.migrate import upgrade
from shared.db.models import ProductTag
from shared.db.session import session_scope
from tests.cli.root import root_with
from tests.shared.labels.conftest import WriteManifest


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, make_database: Callable[[str], str]) -> Iterator[str]:
    """TAGGER_DATABASE_URL pointed at a fresh SQLite file (the command commits, so no shared database)."""
    url = make_database("sqlite")
    monkeypatch.setenv("TAGGER_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


@pytest.fixture
def app() -> typer.Typer:
    root = root_with(register)
    return root


def invoke(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["labels", "import", *args], terminal_width=200)
    return result.exit_code, result.output


def confirmed(url: str) -> int:
    with session_scope(url) as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(ProductTag)
                                  .where(ProductTag.status == "confirmed")) or 0)


def test_sample_imports_then_repeats_as_a_no_op(
    app: typer.Typer, database: str, sample_manifest: Path, tmp_path: Path
) -> None:
    upgrade(database)
    code, output = invoke(app, str(sample_manifest), "--image-dir", str(tmp_path / "images"))
    assert code == 0, output
    assert "200 rows: 200 imported, 0 refused" in output
    assert "1400" in output
    assert confirmed(database) == 1400
    assert len(list((tmp_path / "images").glob("*.jpg"))) == 200

    code, output = invoke(app, str(sample_manifest), "--image-dir", str(tmp_path / "images"))
    assert code == 0, output
    assert "200 imported" in output and "refused rows" not in output
    assert confirmed(database) == 1400


def test_refused_rows_are_listed_and_exit_1(
    app: typer.Typer, database: str, write_manifest: WriteManifest, tmp_path: Path
) -> None:
    upgrade(database)
    rows = [{"id": f"blank-{i:02d}", "title": "", "image": None, "colour": "Red", "usage": "x"}
            for i in range(25)]
    rows.append({"id": "good", "title": "Red Shirt", "image": None, "colour": "Red", "usage": "Casual"})
    code, output = invoke(app, str(write_manifest(rows)), "--image-dir", str(tmp_path / "images"))
    assert code == 1, output
    assert "26 rows: 1 imported, 25 refused" in output
    assert "refused rows (first 20; 5 more)" in output
    assert "blank-19" in output and "blank-20" not in output
    assert "empty title" in output
    assert confirmed(database) == 2  # the good row was committed


def test_unusable_input_exits_2(
    app: typer.Typer, database: str, sample_manifest: Path, tmp_path: Path
) -> None:
    code, output = invoke(app, str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "manifest file not found" in output

    code, output = invoke(app, str(sample_manifest), "--image-dir", str(tmp_path / "images"))  # not migrated
    assert code == 2
    assert "tagger db upgrade" in output
