"""Live accuracy without labels: confidence-based performance estimation (CBPE) over a rolling window.

A single-label axis's calibrated top-1 score is the probability that the top value is right (that is
what temperature scaling fits), so the mean top-1 score over recent items estimates the accuracy on
them with no label at all. It holds while calibration holds: under a shift that the scores do not
see (confidently wrong inputs), it overestimates — docs/MODEL.md states the error measured on a
held-out part and under a modality shift. Multi-label axes have no single top value and are left out.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np

MIN_ITEMS = 50  # fewer recent items than this give no estimate: the noise would page someone


def expected_accuracy(top_scores: np.ndarray) -> float:
    """The expected share of correct top-1 values, given their calibrated scores."""
    return float(np.mean(top_scores)) if len(top_scores) else float("nan")


class RollingAccuracy:
    """The last ``window`` top-1 scores per axis and their mean; thread-safe (a worker runs batches
    on several threads)."""

    def __init__(self, window: int = 2000, min_items: int = MIN_ITEMS) -> None:
        self.window = window
        self.min_items = min_items
        self._scores: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, top_scores: Mapping[str, Iterable[float]]) -> None:
        """Record a batch: per axis, the top-1 score of each item."""
        with self._lock:
            for axis, scores in top_scores.items():
                self._scores.setdefault(axis, deque(maxlen=self.window)).extend(float(s) for s in scores)

    def reset(self) -> None:
        """Forget the window (a new model scores differently)."""
        with self._lock:
            self._scores.clear()

    def estimates(self) -> dict[str, float]:
        """Estimated accuracy per axis with at least ``min_items`` recent items."""
        with self._lock:
            return {axis: expected_accuracy(np.fromiter(s, float)) for axis, s in self._scores.items()
                    if len(s) >= self.min_items}


def reference_accuracy(manifest: Mapping) -> dict[str, float]:
    """The accuracy the model measured at training time on its held-out part, per single-label axis:
    the figure a live estimate is compared with (the fused model's, ``metrics.modalities.both``)."""
    modalities = (manifest.get("metrics") or {}).get("modalities") or {}
    axes = modalities.get("both") or {}
    return {axis: float(m["accuracy"]) for axis, m in axes.items()
            if isinstance(m, Mapping) and isinstance(m.get("accuracy"), int | float)}
