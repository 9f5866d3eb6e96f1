"""Temperature scaling per axis, then per-label thresholds for a target precision.

Thresholds are chosen on held-out calibration data, per value, with the value's precision
shrunk towards its axis's: a rare value with five lucky hits is not trusted more than the axis
as a whole, and falls back to the axis's pooled threshold.
"""

from __future__ import annotations

import numpy as np

from shared.ml.labels import Axis

NEVER = 1.01  # above any probability: always 'review'
MIN_SUPPORT = 20  # predictions a value needs before 'never auto' overrides the pooled threshold
PRIOR_STRENGTH = 20.0  # pseudo-predictions at the axis's precision behind each value's estimate
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


def _threshold_for(
    scores: np.ndarray, correct: np.ndarray, target: float, prior: float | None = None,
) -> float | None:
    """Lowest score s such that predictions scoring >= s reach ``target`` precision; None when
    no such s exists.

    With ``prior`` (the axis's overall precision), the precision of a value's top-k is estimated
    with PRIOR_STRENGTH pseudo-predictions at that precision: a rare value needs evidence of its
    own to be trusted more than the axis as a whole, and many values share what little they have.
    """
    if len(scores) == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order].astype(np.float64)
    hits = np.cumsum(c)
    n = np.arange(1, len(s) + 1)
    est = hits / n if prior is None else (hits + PRIOR_STRENGTH * prior) / (n + PRIOR_STRENGTH)
    ok = est >= target
    # Only cut where the score changes, so ties are all in or all out.
    boundary = np.append(s[1:] < s[:-1], True)
    ok &= boundary
    if not ok.any():
        return None
    k = int(np.nonzero(ok)[0].max())
    return float(s[k])


def _per_value(
    axis: Axis, scores: list[np.ndarray], correct: list[np.ndarray], target: float
) -> None:
    """Shared by single- and multi-label axes: ``scores[k]``/``correct[k]`` are the calibration
    predictions of value k. Values whose best-scored predictions still miss the target (with
    enough of them to tell) are never auto; the rest get their own threshold when their evidence
    suffices, else at least the axis's pooled one."""
    raw = [_threshold_for(sc, co, target) for sc, co in zip(scores, correct, strict=True)]
    never = [r is None and len(sc) >= MIN_SUPPORT for r, sc in zip(raw, scores, strict=True)]
    keep = [k for k in range(len(scores)) if not never[k]]
    pooled_s = np.concatenate([scores[k] for k in keep]) if keep else np.zeros(0)
    pooled_c = np.concatenate([correct[k] for k in keep]) if keep else np.zeros(0, bool)
    pooled = _threshold_for(pooled_s, pooled_c, target)
    axis.default_threshold = max(pooled, 0.5) if pooled is not None else NEVER
    prior = float(pooled_c.mean()) if len(pooled_c) else 0.0
    axis.thresholds = {}
    for k, value in enumerate(axis.values):
        if never[k]:
            axis.thresholds[value] = NEVER
            continue
        own = _threshold_for(scores[k], correct[k], target, prior)
        if own is None and raw[k] is not None:
            own = max(raw[k], axis.default_threshold)
        if own is not None:
            axis.thresholds[value] = min(max(own, 0.5), NEVER)


def fit_thresholds(axis: Axis, probs: np.ndarray, y: np.ndarray, target: float) -> None:
    """Set ``axis.thresholds`` (per value) and ``axis.default_threshold`` from calibration data."""
    if axis.kind == "single":
        keep = y != -1
        p, yy = probs[keep], y[keep]
        top = p.argmax(1)
        score = p.max(1)
        correct = top == yy
        sel = [top == k for k in range(len(axis.values))]
        _per_value(axis, [score[s] for s in sel], [correct[s] for s in sel], target)
        return
    keep = (y >= 0).all(axis=1)
    p, yy = probs[keep], y[keep] > 0.5
    # A multi-label value is proposed when its score passes 0.5; precision is over those.
    sel = [p[:, k] >= 0.5 for k in range(len(axis.values))]
    _per_value(axis, [p[s, k] for k, s in enumerate(sel)], [yy[s, k] for k, s in enumerate(sel)],
               target)
