"""Temperature scaling per axis, then per-label thresholds for a target precision.

Thresholds are chosen on held-out data with a small-sample penalty: a value needs enough
correct predictions above its threshold that one more error would still keep the target, so a
rare value with five lucky hits does not get auto-applied.
"""

from __future__ import annotations

import numpy as np

from shared.ml.labels import Axis

NEVER = 1.01  # above any probability: always 'review'
MIN_SUPPORT = 20  # predictions a value needs before its own verdict overrides the pooled one
_TEMPS = np.exp(np.linspace(np.log(0.25), np.log(8.0), 80))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits / temperature, -60, 60)))


def probabilities(axis: Axis, logits: np.ndarray) -> np.ndarray:
    return (softmax if axis.kind == "single" else sigmoid)(logits, axis.temperature)


def fit_temperature(axis: Axis, logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising held-out negative log-likelihood (a 1-D grid: robust, exact)."""
    if axis.kind == "single":
        keep = y >= 0
        if keep.sum() == 0:
            return 1.0
        lg, yy = logits[keep], y[keep]

        def nll(t: float) -> float:
            p = softmax(lg, t)[np.arange(len(yy)), yy]
            return float(-np.log(np.clip(p, 1e-12, 1)).mean())
    else:
        keep = (y >= 0).all(axis=1)
        if keep.sum() == 0:
            return 1.0
        lg, yy = logits[keep], y[keep]

        def nll(t: float) -> float:
            p = np.clip(sigmoid(lg, t), 1e-12, 1 - 1e-12)
            return float(-(yy * np.log(p) + (1 - yy) * np.log(1 - p)).mean())

    return float(min(_TEMPS, key=nll))


def _threshold_for(scores: np.ndarray, correct: np.ndarray, target: float) -> float | None:
    """Lowest score s such that predictions scoring >= s reach ``target`` precision, counting
    one extra error as a guard against small samples; None when no such s exists."""
    if len(scores) == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order].astype(np.float64)
    hits = np.cumsum(c)
    n = np.arange(1, len(s) + 1)
    ok = hits / (n + 1) >= target
    # Only cut where the score changes, so ties are all in or all out.
    boundary = np.append(s[1:] < s[:-1], True)
    ok &= boundary
    if not ok.any():
        return None
    k = int(np.nonzero(ok)[0].max())
    return float(s[k])


def fit_thresholds(axis: Axis, probs: np.ndarray, y: np.ndarray, target: float) -> None:
    """Set ``axis.thresholds`` (per value) and ``axis.default_threshold`` (pooled over values,
    used for values too rare to have their own)."""
    axis.thresholds = {}
    if axis.kind == "single":
        keep = y != -1
        p, yy = probs[keep], y[keep]
        top = p.argmax(1)
        score = p.max(1)
        correct = top == yy
        pooled = _threshold_for(score, correct, target)
        axis.default_threshold = max(pooled, 0.5) if pooled is not None else NEVER
        for k, value in enumerate(axis.values):
            sel = top == k
            t = _threshold_for(score[sel], correct[sel], target)
            if t is not None:
                axis.thresholds[value] = max(t, 0.5)
            elif sel.sum() >= MIN_SUPPORT:
                axis.thresholds[value] = NEVER  # seen enough to know it cannot reach the target
        return
    keep = (y >= 0).all(axis=1)
    p, yy = probs[keep], y[keep]
    pooled = _threshold_for(p.ravel(), yy.ravel() > 0.5, target)
    axis.default_threshold = max(pooled, 0.5) if pooled is not None else NEVER
    for k, value in enumerate(axis.values):
        t = _threshold_for(p[:, k], yy[:, k] > 0.5, target)
        if t is not None:
            axis.thresholds[value] = max(t, 0.5)
        elif (p[:, k] >= 0.5).sum() >= MIN_SUPPORT:
            axis.thresholds[value] = NEVER
