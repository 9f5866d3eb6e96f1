"""The promotion rule on score tables with known answers."""

from __future__ import annotations

from shared.ml.gate import decide


def table(**acc: float) -> dict:
    return {a: {"n": 100, "accuracy": v} for a, v in acc.items()}


def test_better_everywhere_is_promoted() -> None:
    d = decide(table(colour=0.90, type=0.95), table(colour=0.92, type=0.95), tolerance=0.005)
    assert d.promote and "better overall" in d.reason


def test_worse_on_one_axis_beyond_tolerance_is_rejected_with_the_axis_named() -> None:
    d = decide(table(colour=0.90, type=0.95), table(colour=0.99, type=0.93), tolerance=0.005)
    assert not d.promote and "type 0.9300 < 0.9500" in d.reason


def test_small_dip_within_tolerance_but_better_overall_passes() -> None:
    d = decide(table(colour=0.90, type=0.95), table(colour=0.93, type=0.947), tolerance=0.005)
    assert d.promote


def test_equal_is_not_better() -> None:
    d = decide(table(colour=0.9), table(colour=0.9), tolerance=0.005)
    assert not d.promote and "not better overall" in d.reason


def test_new_axes_and_values_are_reported() -> None:
    d = decide(table(colour=0.9), {**table(colour=0.95), "pattern": {"n": 10, "accuracy": 0.5}},
               tolerance=0.0, champion_values={"colour": ["Red"]},
               challenger_values={"colour": ["Red", "Teal"], "pattern": ["Striped"]})
    assert d.promote
    assert d.new_axes == ["pattern"] and d.new_values == {"colour": ["Teal"]}
    assert "new axes ['pattern']" in d.reason
