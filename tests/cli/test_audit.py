"""``tagger audit list | refresh`` against a real database: what the live audit decided, recomputed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import typer
from typer.testing import CliRunner

from cli.audit import register
from shared.config import get_settings
from shared.db.migrate import upgrade
from shared.db.session import session_scope
from shared.db.tags import TaggingResult, apply_batch
from shared.labels.decisions import decide
from tests.cli.root import root_with


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, make_database: Callable[[str], str]) -> Iterator[typer.Typer]:
    url = make_database("sqlite")
    upgrade(url)
    monkeypatch.setenv("TAGGER_DATABASE_URL", url)
    get_settings.cache_clear()
    with session_scope(url) as session:  # an audited tag a reviewer rejected: evidence, not yet judged
        apply_batch(session, [TaggingResult(
            event_id="e1", product_id="p1", seller_id="s1", title="Men Shoes", description=None,
            image_uri=None, locale=None, occurred_at=datetime(2025, 1, 1, tzinfo=UTC), content_hash="h",
            model_version="v1", tags=[("gender", "Men", 0.99, "auto", "audit")])])
        decide(session, "p1", "gender", "Men", "reject")
    yield root_with(register)
    get_settings.cache_clear()


def test_refresh_judges_the_evidence_and_list_shows_it(app: typer.Typer) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["audit", "list"])
    header = "axis\tvalue\tenabled\tn\thits\tlower\tupper"
    assert listed.exit_code == 0 and listed.output.splitlines() == [header]
    refreshed = runner.invoke(app, ["audit", "refresh"])
    assert refreshed.exit_code == 0, refreshed.output
    assert "1 values recomputed; 1 switched off: gender=Men" in refreshed.output
    listed = runner.invoke(app, ["audit", "list", "--axis", "gender"])
    assert listed.output.splitlines()[1] == "gender\tMen\tno\t1\t0\t0.0000\t0.9500"
    assert runner.invoke(app, ["audit", "list", "--axis", "colour"]).output.count("\n") == 1
