"""Temperature scaling and precision-targeted thresholds on data with known answers."""

from __future__ import annotations

import numpy as np

from shared.ml.calibration import fit_temperature, fit_thresholds, softmax
from shared.ml.evaluation import axis_metrics
from shared.ml.labels import Axis


def test_temperature_undoes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    n, k = 4000, 5
    true_logits = rng.normal(size=(n, k)) * 2
    y = np.array([rng.choice(k, p=p) for p in softmax(true_logits)])
    axis = Axis("a", "single", [str(i) for i in range(k)])
    t = fit_temperature(axis, true_logits * 3, y)  # a model 3x too sure of itself
    assert 2.4 < t < 3.6


def test_thresholds_reach_target_precision_and_refuse_hopeless_values() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    y = rng.integers(0, 3, size=n)
    probs = np.full((n, 3), 0.05)
    score = rng.uniform(0.4, 1.0, size=n)
    # value 0 and 1: right exactly with probability = score; value 2: always wrong
    right = rng.uniform(size=n) < score
    pred = np.where(right, y, (y + 1) % 3)
    pred[y == 1] = 2  # the model says 2 where the truth is 1
    probs[np.arange(n), pred] = score
    axis = Axis("a", "single", ["0", "1", "2"])
    fit_thresholds(axis, probs, y, target=0.95)
    assert axis.thresholds["2"] > 0.99  # mostly wrong: only its very top may be auto
    m = axis_metrics(axis, probs, y)
    assert m["auto_precision"] >= 0.95
    assert 0 < m["auto_coverage"] < 1


def test_multi_label_metrics_shape() -> None:
    axis = Axis("tags", "multi", ["a", "b"])
    probs = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.6]])
    y = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    fit_thresholds(axis, probs, y, target=0.9)
    m = axis_metrics(axis, probs, y)
    assert set(m) == {"n", "micro_f1", "macro_f1", "auto_precision", "auto_coverage"}
    assert m["micro_f1"] == 1.0
