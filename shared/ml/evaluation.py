"""Per-axis metrics: accuracy (or micro-F1), macro-F1, and precision/coverage of auto tags.

With a model's learned contradictions (``shared.ml.consistency``) the auto decisions are the jointly
decoded ones, made by the same ``Consistency.resolve`` the predictor calls, so precision and
coverage are those of the tags the product applies; two keys count what the decoding did.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from shared.ml.consistency import Consistency, top_auto
from shared.ml.labels import Axis


def axis_metrics(axis: Axis, probs: np.ndarray, y: np.ndarray, auto: np.ndarray | None = None) -> dict:
    """Metrics over the items labelled on ``axis``; a label the model does not know is an error.
    ``auto`` (single-label, per item): whether its top value is auto-applied; default: its score
    reaches its threshold."""
    if axis.kind == "single":
        keep = y != -1
        p, yy = probs[keep], y[keep]
        n = int(keep.sum())
        if n == 0:
            return {"n": 0}
        top = p.argmax(1)
        score = p.max(1)
        unknown = len(axis.values)  # one class for every value the model never saw
        truth = np.where(yy < 0, unknown, yy)
        correct = top == truth
        thr = np.array([axis.threshold(v) for v in axis.values])
        auto = score >= thr[top] if auto is None else auto[keep]
        present = np.union1d(np.unique(truth), np.unique(top))
        return {
            "n": n,
            "accuracy": round(float(correct.mean()), 4),
            "macro_f1": round(float(f1_score(truth, top, labels=present, average="macro",
                                             zero_division=0)), 4),
            "auto_precision": round(float(correct[auto].mean()), 4) if auto.any() else None,
            "auto_coverage": round(float(auto.mean()), 4),
        }
    keep = (y >= 0).all(axis=1)
    p, yy = probs[keep], y[keep]
    n = int(keep.sum())
    if n == 0:
        return {"n": 0}
    pred = (p >= 0.5).astype(int)
    truth = (yy > 0.5).astype(int)
    top = p.argmax(1)
    thr = np.array([axis.threshold(v) for v in axis.values])
    auto = p[np.arange(n), top] >= thr[top]
    correct = truth[np.arange(n), top] == 1
    return {
        "n": n,
        "micro_f1": round(float(f1_score(truth, pred, average="micro", zero_division=0)), 4),
        "macro_f1": round(float(f1_score(truth, pred, average="macro", zero_division=0)), 4),
        "auto_precision": round(float(correct[auto].mean()), 4) if auto.any() else None,
        "auto_coverage": round(float(auto.mean()), 4),
    }


def evaluate_probs(
    axes: list[Axis], probs: dict[str, np.ndarray], y: dict[str, np.ndarray],
    consistency: Consistency | None = None, all_axes: list[Axis] | None = None,
) -> dict[str, dict]:
    """Metrics per axis of ``axes`` labelled in ``y``. With ``consistency``, auto tags are decoded
    jointly over ``all_axes`` (default ``axes``: every axis the model tags, labelled or not) and
    each single-label axis also gets ``contradictions`` (items whose auto tag on it still
    contradicts another auto tag: 0, checked, not assumed) and ``contradiction_reviews`` (items
    whose auto tag on it went to review because it contradicted another), over every item."""
    if consistency is None:
        return {a.name: axis_metrics(a, probs[a.name], y[a.name]) for a in axes if a.name in y}
    decoded = [a for a in (all_axes or axes) if a.name in probs]
    thresholds = {a.name: np.array([a.threshold(v) for v in a.values]) for a in decoded}
    after, contradicted = consistency.resolve(decoded, top_auto(decoded, probs, thresholds))
    left = consistency.conflicts(decoded, after)
    out = {}
    for a in axes:
        if a.name not in y:
            continue
        if a.name not in after:  # multi-label: not decoded jointly
            out[a.name] = axis_metrics(a, probs[a.name], y[a.name])
            continue
        out[a.name] = axis_metrics(a, probs[a.name], y[a.name], after[a.name].any(axis=1))
        if out[a.name]["n"]:
            out[a.name]["contradictions"] = int(left[a.name].sum())
            out[a.name]["contradiction_reviews"] = int(contradicted[a.name].sum())
    return out


def headline(m: dict) -> float | None:
    """The one number a table shows first for an axis: accuracy, or micro-F1 for multi-label."""
    return m.get("accuracy", m.get("micro_f1"))
