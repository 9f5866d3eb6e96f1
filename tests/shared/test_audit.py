"""The live audit's library: deterministic sampling, pausing, the switch rule, and the switches kept in
the database from people's decisions (Postgres and SQLite, each test in a rolled-back transaction)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared import audit
from shared.db.models import AutoSwitch
from shared.db.tags import ModelTag, TaggingResult, apply_batch
from shared.labels.decisions import decide
from tests.shared.db.conftest import db_url, make_database, session  # noqa: F401  (fixtures)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TARGET, WINDOW = 0.98, 500
TAGS = [("gender", "Men", 0.99, "auto"), ("gender", "Women", 0.01, "review"),
        ("colour", "Black", 0.97, "auto"), ("usage", "Casual", 0.70, "review", "out_of_domain")]


# --- sampling and pausing ----------------------------------------------------------------------------


def test_draw_is_fixed_by_event_axis_value_and_uniform() -> None:
    assert audit.draw("e1", "gender", "Men") == audit.draw("e1", "gender", "Men")
    assert audit.draw("e1", "gender", "Men") != audit.draw("e2", "gender", "Men")
    assert audit.draw("e1", "gender", "Men") != audit.draw("e1", "gender", "Women")
    draws = np.array([audit.draw(f"ev-{i}", "gender", "Men") for i in range(20_000)])
    assert np.all((draws >= 0) & (draws < 1))
    assert abs((draws < 0.02).mean() - 0.02) < 0.004  # ~2% audited, as the rate says
    assert np.histogram(draws, bins=10, range=(0, 1))[0].min() > 1800  # no lumps


def test_apply_marks_a_sample_of_auto_tags_and_nothing_else() -> None:
    assert audit.apply(TAGS, "e1", frozenset(), 0.0) == [ModelTag(*t) for t in TAGS]
    everything = audit.apply(TAGS, "e1", frozenset(), 1.0)
    assert everything == [ModelTag("gender", "Men", 0.99, "auto", "audit"), ModelTag(*TAGS[1]),
                          ModelTag("colour", "Black", 0.97, "auto", "audit"), ModelTag(*TAGS[3])]
    # A redelivered event marks the same tags; another event draws again.
    marks = {e: [t.reason for t in audit.apply(TAGS, e, frozenset(), 0.5)] for e in ("a", "b", "c", "d")}
    again = {e: [t.reason for t in audit.apply(TAGS, e, frozenset(), 0.5)] for e in marks}
    assert again == marks
    assert len({tuple(m) for m in marks.values()}) > 1


def test_apply_pauses_switched_off_values_only() -> None:
    tags = audit.apply(TAGS, "e1", frozenset({("gender", "Men"), ("usage", "Casual")}), 1.0)
    assert tags[0] == ModelTag("gender", "Men", 0.99, "review", "paused")  # would have been applied
    assert tags[2] == ModelTag("colour", "Black", 0.97, "auto", "audit")  # other values unaffected
    assert tags[3] == ModelTag(*TAGS[3])  # not applied anyway: nothing to pause, its reason kept
    result = TaggingResult(event_id="e1", product_id="p1", seller_id="s", title="t", description=None,
                           image_uri=None, locale=None, occurred_at=T0, content_hash="h",
                           model_version="v1", tags=tags)  # the writer accepts what apply returns
    assert result.tags == tuple(tags)


# --- the rule ----------------------------------------------------------------------------------------


def _rule(hits: int, n: int) -> audit.Verdict:
    return audit.judge([("gender", "Men")], [hits], [n], TARGET)[0]


def test_rule_switches_off_only_on_evidence_of_failure() -> None:
    assert _rule(0, 0).enabled and _rule(0, 0).upper == 1.0  # never audited: on
    assert _rule(1, 1).enabled  # one confirmation: on, although its lower bound is .05 < target
    assert _rule(1, 1).lower == pytest.approx(0.05)
    assert not _rule(0, 1).enabled  # a miss first: had precision been >= .98, p(that) <= 2%
    assert not _rule(1, 2).enabled and _rule(2, 3).enabled  # one miss among three: not evidence
    assert not _rule(8, 10).enabled  # two misses in ten are
    assert _rule(485, 500).upper >= TARGET and _rule(485, 500).enabled  # 15 misses in 500: .970
    assert not _rule(484, 500).enabled  # 16 misses: shown under .98
    assert "upper bound" in _rule(0, 1).reason and "0/1" in _rule(0, 1).reason


def test_rule_is_vectorised() -> None:
    verdicts = audit.judge([("a", "x"), ("a", "y"), ("b", "z")], [0, 9, 50], [1, 10, 50], TARGET)
    assert [(v.axis, v.value, v.enabled, v.n, v.hits) for v in verdicts] == [
        ("a", "x", False, 1, 0), ("a", "y", True, 10, 9), ("b", "z", True, 50, 50)]


# --- the switches in the database --------------------------------------------------------------------


@pytest.fixture
def db(session: Session) -> Session:  # noqa: F811  (the imported fixture)
    """A session in a transaction rolled back after the test (tests/shared/db/conftest.py)."""
    return session


def _tag(db: Session, product_id: str, value: str = "Men", reason: str | None = "audit",
         status: str = "auto") -> str:
    apply_batch(db, [TaggingResult(
        event_id=f"e-{product_id}", product_id=product_id, seller_id="s1", title="Men Shoes",
        description=None, image_uri=None, locale=None, occurred_at=T0, content_hash="h",
        model_version="v1", tags=[("gender", value, 0.99, status, reason)])])
    return product_id


def _decide(db: Session, product_id: str, action: str, value: str = "Men") -> list[audit.Verdict]:
    changed = decide(db, product_id, "gender", value, action)  # type: ignore[arg-type]
    return audit.after_decisions(db, product_id, [("gender", v) for v in changed],
                                 target=TARGET, window=WINDOW)


def _switch(db: Session, value: str = "Men") -> AutoSwitch | None:
    db.expire_all()
    return db.get(AutoSwitch, ("gender", value))


def test_a_rejected_audit_switches_the_value_off_and_confirmations_bring_it_back(
    db: Session, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "tagger.audit")
    _tag(db, "p1")
    assert audit.switched_off(db) == frozenset() and _switch(db) is None

    [verdict] = _decide(db, "p1", "reject")
    assert not verdict.enabled
    row = _switch(db)
    assert row is not None and (row.enabled, row.n, row.hits, row.target) == (False, 1, 0, TARGET)
    assert row.upper == pytest.approx(0.95) and row.lower == 0.0 and row.changed_at is not None
    assert audit.switched_off(db) == {("gender", "Men")}
    assert 'auto_switched_off axis="gender" value="Men" n=1 hits=0 lower=0.0000 upper=0.9500' in caplog.text

    # While off, the value's tags are paused; people confirming those bring it back.
    _tag(db, "p2", reason="paused", status="review")
    _tag(db, "p3", reason="paused", status="review")
    assert not _decide(db, "p2", "confirm")[0].enabled  # 1/2: upper .975, still shown under
    assert "auto_switched_on" not in caplog.text
    assert _decide(db, "p3", "confirm")[0].enabled  # 2/3: upper .983
    row = _switch(db)
    assert row is not None and (row.enabled, row.n, row.hits) == (True, 3, 2)
    assert audit.switched_off(db) == frozenset()
    assert 'auto_switched_on axis="gender" value="Men" n=3 hits=2' in caplog.text


def test_re_deciding_counts_once_with_the_latest_answer(db: Session) -> None:
    _tag(db, "p1")
    assert not _decide(db, "p1", "reject")[0].enabled
    [verdict] = _decide(db, "p1", "confirm")  # the reviewer corrects their own mistake
    assert (verdict.enabled, verdict.n, verdict.hits) == (True, 1, 1)


def test_only_audit_and_paused_decisions_count(db: Session) -> None:
    _tag(db, "p1", reason=None)  # applied, not sampled
    _tag(db, "p2", reason="out_of_domain", status="review")
    assert _decide(db, "p1", "reject") == [] and _decide(db, "p2", "reject") == []
    assert db.scalar(sa.select(sa.func.count()).select_from(AutoSwitch)) == 0
    _tag(db, "p3")
    [verdict] = _decide(db, "p3", "confirm")
    assert (verdict.n, verdict.hits) == (1, 1)  # the two rejections above are not evidence


def test_a_correction_is_a_miss_for_the_audited_value(db: Session) -> None:
    _tag(db, "p1")
    changed = decide(db, "p1", "gender", "Men", "correct", "Women")
    verdicts = audit.after_decisions(db, "p1", [("gender", v) for v in changed], target=TARGET,
                                     window=WINDOW)
    assert [(v.value, v.n, v.hits, v.enabled) for v in verdicts] == [("Men", 1, 0, False)]


def test_only_the_latest_window_decisions_count(db: Session) -> None:
    for i in range(3):  # three old misses ...
        _tag(db, f"old{i}")
        _decide(db, f"old{i}", "reject")
    for i in range(4):  # ... then four hits
        _tag(db, f"new{i}")
        _decide(db, f"new{i}", "confirm")
    everything = audit.refresh_all(db, target=TARGET, window=WINDOW)
    assert [(v.n, v.hits, v.enabled) for v in everything] == [(7, 4, False)]
    recent = audit.refresh_all(db, target=TARGET, window=4)  # the misses aged out
    assert [(v.n, v.hits, v.enabled) for v in recent] == [(4, 4, True)]
    assert audit.evidence(db, 4, [("gender", "Men"), ("gender", "Nobody")]) == {
        ("gender", "Men"): (4, 4)}


def test_refresh_all_follows_a_new_target_and_lists_by_axis(db: Session) -> None:
    _tag(db, "p1")
    _decide(db, "p1", "confirm")
    _tag(db, "p2", value="Women")
    _decide(db, "p2", "confirm", value="Women")
    assert [s.value for s in audit.switches(db, "gender")] == ["Men", "Women"]
    assert audit.switches(db, "colour") == []
    assert all(v.enabled for v in audit.refresh_all(db, target=TARGET, window=WINDOW))
    # A stricter target than one confirmation can rule out (upper bound 1.0 is never under it): on.
    assert all(v.enabled for v in audit.refresh_all(db, target=1.0, window=WINDOW))
    assert {s.target for s in audit.switches(db)} == {1.0}
