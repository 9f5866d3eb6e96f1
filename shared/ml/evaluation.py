"""Per-axis metrics: accuracy (or micro-F1), macro-F1, and precision/coverage of auto tags.

With a model's learned contradictions (``shared.ml.consistency``) the auto decisions are the jointly
decoded ones, made by the same ``Consistency.resolve`` the predictor calls, so precision and
coverage are those of the tags the product applies; two keys count what the decoding did.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from shared.ml.bounds import precision_lower_bound
from shared.ml.consistency import Consistency, top_auto
from shared.ml.labels import Axis


def _auto_summary(correct: np.ndarray, auto: np.ndarray) -> dict:
    """Precision of the applied tags with its one-sided 95% lower bound (Clopper-Pearson), and coverage."""
    n_auto, hits = int(auto.sum()), int(correct[auto].sum())
    return {
        "auto_precision": round(hits / n_auto, 4) if n_auto else None,
        "auto_precision_lower": round(float(precision_lower_bound(hits, n_auto)), 4) if n_auto else None,
        "auto_coverage": round(float(auto.mean()), 4),
    }


def axis_metrics(axis: Axis, probs: np.ndarray, y: np.ndarray, auto: np.ndarray | None = None,
                 abstain: np.ndarray | None = None, withheld: np.ndarray | None = None) -> dict:
    """Metrics over the items labelled on ``axis``; a label the model does not know is an error.
    ``auto`` (single-label, per item): whether its top value is auto-applied; default: its score
    reaches its threshold. ``abstain`` (per item): out of the model's domain, so nothing is applied.
    ``withheld`` (per item): the axis's tags held back (shared.ml.evidence: the item's title and photo
    disagreed, or it had one input, which may not apply this axis alone).
    ``estimated_accuracy`` is what the workers report without labels (the mean calibrated top-1
    score, shared.ml.live_accuracy): beside ``accuracy`` it shows the estimate's error."""
    if abstain is None:
        abstain = np.zeros(len(probs), bool)
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
        held = np.zeros(n, bool) if withheld is None else withheld[keep]
        auto = (score >= thr[top] if auto is None else auto[keep]) & ~abstain[keep] & ~held
        present = np.union1d(np.unique(truth), np.unique(top))
        return {
            "n": n,
            "accuracy": round(float(correct.mean()), 4),
            "estimated_accuracy": round(float(score.mean()), 4),
            "macro_f1": round(float(f1_score(truth, top, labels=present, average="macro",
                                             zero_division=0)), 4),
            **_auto_summary(correct, auto),
            "abstentions": int(abstain[keep].sum()),
            "withheld": int(held.sum()),
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
    held = np.zeros(n, bool) if withheld is None else withheld[keep]
    auto = (p[np.arange(n), top] >= thr[top]) & ~abstain[keep] & ~held
    correct = truth[np.arange(n), top] == 1
    return {
        "n": n,
        "micro_f1": round(float(f1_score(truth, pred, average="micro", zero_division=0)), 4),
        "macro_f1": round(float(f1_score(truth, pred, average="macro", zero_division=0)), 4),
        **_auto_summary(correct, auto),
        "abstentions": int(abstain[keep].sum()),
        "withheld": int(held.sum()),
    }


def evaluate_probs(
    axes: list[Axis], probs: dict[str, np.ndarray], y: dict[str, np.ndarray],
    consistency: Consistency | None = None, all_axes: list[Axis] | None = None,
    abstain: np.ndarray | None = None, withheld: dict[str, np.ndarray] | None = None,
) -> dict[str, dict]:
    """Metrics per axis of ``axes`` labelled in ``y``. With ``consistency``, auto tags are decoded
    jointly over ``all_axes`` (default ``axes``: every axis the model tags, labelled or not) and
    each single-label axis also gets ``contradictions`` (items whose auto tag on it still
    contradicts another auto tag: 0, checked, not assumed) and ``contradiction_reviews`` (items
    whose auto tag on it went to review because it contradicted another), over every item.
    ``abstain`` (per item): items the model judged out of its domain; none of their tags is applied.
    ``withheld`` (per axis, per item): that axis applies nothing (``Evidence.withheld``); the
    predictor withholds them before the joint decoding, and so does this."""
    withheld = withheld or {}
    if consistency is None:
        return {a.name: axis_metrics(a, probs[a.name], y[a.name], abstain=abstain,
                                     withheld=withheld.get(a.name))
                for a in axes if a.name in y}
    decoded = [a for a in (all_axes or axes) if a.name in probs]
    thresholds = {a.name: np.array([a.threshold(v) for v in a.values]) for a in decoded}
    auto = top_auto(decoded, probs, thresholds)
    if abstain is not None:  # as in the predictor: an abstained item applies nothing, so contradicts nothing
        auto = {name: m & ~abstain[:, None] for name, m in auto.items()}
    auto = {name: m & ~withheld[name][:, None] if name in withheld else m for name, m in auto.items()}
    after, contradicted = consistency.resolve(decoded, auto)
    left = consistency.conflicts(decoded, after)
    out = {}
    for a in axes:
        if a.name not in y:
            continue
        if a.name not in after:  # multi-label: not decoded jointly
            out[a.name] = axis_metrics(a, probs[a.name], y[a.name], abstain=abstain,
                                       withheld=withheld.get(a.name))
            continue
        out[a.name] = axis_metrics(a, probs[a.name], y[a.name], after[a.name].any(axis=1), abstain,
                                   withheld.get(a.name))
        if out[a.name]["n"]:
            out[a.name]["contradictions"] = int(left[a.name].sum())
            out[a.name]["contradiction_reviews"] = int(contradicted[a.name].sum())
    return out


def headline(m: dict) -> float | None:
    """The one number a table shows first for an axis: accuracy, or micro-F1 for multi-label."""
    return m.get("accuracy", m.get("micro_f1"))
