"""The label-free accuracy estimate: mean calibrated top-1 score over a rolling window per axis."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from shared.config import DEFAULT_MODEL_DIR
from shared.ml.live_accuracy import RollingAccuracy, expected_accuracy, reference_accuracy


def test_a_calibrated_score_is_the_expected_accuracy() -> None:
    """Draw correctness from the scores themselves: the estimate lands on the realised accuracy."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.3, 1.0, 20_000)
    correct = rng.uniform(size=scores.size) < scores
    assert expected_accuracy(scores) == pytest.approx(correct.mean(), abs=0.01)
    assert np.isnan(expected_accuracy(np.array([])))


def test_window_minimum_and_reset() -> None:
    acc = RollingAccuracy(window=100, min_items=10)
    acc.add({"colour": [0.5] * 9})
    assert acc.estimates() == {}  # too few items: no estimate rather than a noisy one
    acc.add({"colour": [0.5], "type": [1.0] * 10})
    assert acc.estimates() == {"colour": 0.5, "type": 1.0}
    acc.add({"colour": [0.9] * 100})  # the window keeps only the last 100
    assert acc.estimates()["colour"] == pytest.approx(0.9)
    acc.reset()
    assert acc.estimates() == {}


def test_batches_from_several_threads_all_count() -> None:
    acc = RollingAccuracy(window=10_000, min_items=1)
    threads = [threading.Thread(target=lambda: [acc.add({"a": [1.0] * 10}) for _ in range(100)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(acc._scores["a"]) == 4_000


def test_reference_is_the_fused_models_held_out_accuracy() -> None:
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    ref = reference_accuracy(manifest)
    both = manifest["metrics"]["modalities"]["both"]
    assert ref and ref == {axis: m["accuracy"] for axis, m in both.items() if "accuracy" in m}
    assert reference_accuracy({}) == {}
