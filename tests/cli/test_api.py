"""``tagger api openapi [--check]``: writes the API's OpenAPI document, or fails while it is stale."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.api import SPEC_PATH
from cli.main import app as tagger

SPEC = Path(__file__).resolve().parents[2] / SPEC_PATH


def test_check_command_fails_on_a_stale_file_and_writes_a_current_one(tmp_path: Path) -> None:
    """``tagger api openapi --check`` is what CI or a pre-commit hook can run; it must exit non-zero."""
    runner, out = CliRunner(), tmp_path / "openapi.json"
    out.write_text("{}\n", encoding="utf-8")
    stale = runner.invoke(tagger, ["api", "openapi", "--out", str(out), "--check"])
    assert stale.exit_code == 1 and "out of date" in stale.output
    assert out.read_text(encoding="utf-8") == "{}\n"  # --check writes nothing
    written = runner.invoke(tagger, ["api", "openapi", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_text(encoding="utf-8") == SPEC.read_text(encoding="utf-8")
    assert runner.invoke(tagger, ["api", "openapi", "--out", str(out), "--check"]).exit_code == 0
