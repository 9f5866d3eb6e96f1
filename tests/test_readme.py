"""The README is part of the product: its settings table and API settings must name every setting
the code reads, and nothing the code does not."""

from __future__ import annotations

import re
from pathlib import Path

from api.config import ApiSettings
from shared.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_settings_table_matches_settings() -> None:
    documented = set(re.findall(r"^\| `TAGGER_([A-Z0-9_]+)` \|", README, flags=re.M))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - documented == set(), "settings missing from README's table"
    assert documented - fields == set(), "README's table lists settings the code does not have"


def test_api_settings_are_documented() -> None:
    for name in ApiSettings.model_fields:
        assert f"`{name.upper()}`" in README, f"TAGGER_API_{name.upper()} is not in the README"


def test_documented_commands_exist() -> None:
    """Each `tagger <group> <command>` in the README's code blocks is a real command."""
    from typer.main import get_command

    from cli.main import app

    root = get_command(app)
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", README, flags=re.S))
    for words in re.findall(r"^(?:\S+=\S+ )*tagger ([a-z-]+)(?: ([a-z-]+))?", blocks, flags=re.M):
        group = root.commands.get(words[0])  # type: ignore[attr-defined]
        assert group is not None, f"README names 'tagger {words[0]}', which does not exist"
        sub = getattr(group, "commands", None)
        if sub is not None and words[1]:
            assert words[1] in sub, f"README names 'tagger {words[0]} {words[1]}', which does not exist"
