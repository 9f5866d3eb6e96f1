"""Clopper–Pearson bounds: closed forms at the edges, scipy's exact interval, coverage, arrays, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from shared.ml.bounds import precision_lower_bound, precision_upper_bound


def test_edges_have_closed_forms() -> None:
    n = np.array([1, 2, 10, 150])
    # All right: the lower bound solves p^n = 0.05; all wrong: the upper bound solves (1-p)^n = 0.05.
    np.testing.assert_allclose(precision_lower_bound(n, n), 0.05 ** (1 / n))
    np.testing.assert_allclose(precision_upper_bound(0, n), 1 - 0.05 ** (1 / n))
    assert np.all(precision_lower_bound(0, n) == 0.0) and np.all(precision_upper_bound(n, n) == 1.0)
    # No evidence proves nothing either way.
    assert precision_lower_bound(0, 0) == 0.0 and precision_upper_bound(0, 0) == 1.0
    # One confirmed audit says little: the lower bound is .05, far under any target.
    assert precision_lower_bound(1, 1) == pytest.approx(0.05)


@pytest.mark.parametrize(("hits", "n"), [(1, 3), (7, 10), (95, 100), (490, 500), (499, 500)])
def test_one_sided_95_equals_scipys_exact_two_sided_90(hits: int, n: int) -> None:
    interval = binomtest(hits, n).proportion_ci(confidence_level=0.90, method="exact")
    assert precision_lower_bound(hits, n) == pytest.approx(interval.low, rel=1e-9)
    assert precision_upper_bound(hits, n) == pytest.approx(interval.high, rel=1e-9)


@pytest.mark.parametrize("n", [1, 5, 30, 200])
def test_upper_bound_is_under_the_true_precision_at_most_5_percent_of_the_time(n: int) -> None:
    """What the switch relies on: at a true precision of .98, "upper < .98" happens with
    probability <= 5% (exact, summed over every possible number of hits)."""
    hits = np.arange(n + 1)
    wrong = precision_upper_bound(hits, n) < 0.98
    assert binom.pmf(hits, n, 0.98)[wrong].sum() <= 0.05
    right_low = precision_lower_bound(hits, n) > 0.98
    assert binom.pmf(hits, n, 0.98)[right_low].sum() <= 0.05


def test_vectorised_and_broadcast() -> None:
    hits = np.array([[0, 1], [2, 3]])
    lower, upper = precision_lower_bound(hits, 3), precision_upper_bound(hits, 3)
    assert lower.shape == upper.shape == (2, 2)
    assert np.all(lower <= hits / 3) and np.all(hits / 3 <= upper)
    assert np.all(np.diff(lower.ravel()) > 0) and np.all(np.diff(upper.ravel()) > 0)
    assert precision_upper_bound(9, 10, confidence=0.99) > precision_upper_bound(9, 10, confidence=0.9)


@pytest.mark.parametrize(("hits", "n", "confidence"), [(3, 2, 0.95), (-1, 2, 0.95), (1.5, 2, 0.95),
                                                       (1, 2, 1.0), (1, 2, 0.0)])
def test_bad_input_is_refused(hits: float, n: int, confidence: float) -> None:
    with pytest.raises(ValueError):
        precision_lower_bound(hits, n, confidence)
    with pytest.raises(ValueError):
        precision_upper_bound(hits, n, confidence)
