"""Temperature scaling per axis, then per-value thresholds that carry a precision guarantee.

A value's threshold is the lowest calibration score s at which the one-sided Clopper–Pearson
lower confidence bound (95% by default) of the precision of that value's calibration predictions
scoring >= s reaches the target. A point estimate of precision on a few hundred items does not
hold out of sample (measured: .964 on colour against a promised .98); a lower bound needs evidence
in proportion to the promise (all of 149 right for .98 at 95%), so a value that has too little of it
is never auto-applied rather than trusted on luck. Cuts fall only where the score changes, so tied
predictions are all in or all out, and never below 0.5: an auto tag is at least more likely than not.
The bound holds per cut; picking the lowest passing cut after looking makes it nominal, which is
why training also measures auto precision on a validation part it never tuned on.

The axis's ``default_threshold`` (used for a value without its own entry) is NEVER: every value
of the axis gets its own entry, so the default only concerns values the axis does not know. Rare
values do not borrow the axis's evidence (a point estimate shrunk toward the axis is how they used
to slip under the target); with ``pool_thin`` they may prove themselves *together*, under the same
bound, as one group of values too rare to prove anything alone (:func:`pool_thin_values`).
"""

from __future__ import annotations

import math

import numpy as np

from shared.ml.bounds import CONFIDENCE, needed_for_auto, precision_lower_bound, precision_upper_bound
from shared.ml.labels import Axis

NEVER = 1.01  # above any probability: always 'review'
MIN_AUTO_SCORE = 0.5  # no cut below this: an auto tag is at least more likely than not
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


def _floor4(x: float) -> float:
    """Rounded down for the record: a bound written as .98 must be at least .98."""
    return math.floor(x * 1e4) / 1e4


def value_threshold(
    scores: np.ndarray, correct: np.ndarray, target: float, confidence: float = CONFIDENCE,
) -> tuple[float, dict]:
    """The threshold of one value from its calibration predictions (their scores and whether
    each was right), and the evidence behind it: at the chosen cut, or, when none reaches the
    target, at the cut whose bound came closest (what the value would need to improve on)."""
    ev = {"proposed": int(len(scores)), "n": 0, "hits": 0, "lower_bound": 0.0,
          "threshold": NEVER, "auto": False, "confidence": confidence}
    if len(scores) == 0:
        return NEVER, ev
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order].astype(np.int64)
    hits, n = np.cumsum(c), np.arange(1, len(s) + 1)
    # Only cut where the score changes, so ties are all in or all out.
    cut = np.append(s[1:] < s[:-1], True) & (s >= MIN_AUTO_SCORE)
    if not cut.any():
        return NEVER, ev
    bound = np.where(cut, precision_lower_bound(hits, n, confidence), -1.0)
    ok = bound >= target
    k = int(np.nonzero(ok)[0].max()) if ok.any() else int(bound.argmax())
    threshold = float(s[k]) if ok.any() else NEVER
    ev.update(n=int(n[k]), hits=int(hits[k]), lower_bound=_floor4(float(bound[k])),
              threshold=threshold, auto=bool(ok.any()))
    return threshold, ev


def per_value(
    axis: Axis, scores: list[np.ndarray], correct: list[np.ndarray], target: float,
    confidence: float, pool_thin: bool = False, pool_unproven: bool = False,
) -> None:
    """``scores[k]``/``correct[k]``: the calibration predictions of value k (single- and
    multi-label alike). Every value gets its own threshold and evidence; the default is NEVER.
    With ``pool_thin``, the values too rare to prove the target alone are proven together
    (:func:`pool_thin_values`); with ``pool_unproven`` too, so are those that did not prove it."""
    axis.thresholds, axis.evidence = {}, {}
    for value, sc, co in zip(axis.values, scores, correct, strict=True):
        axis.thresholds[value], axis.evidence[value] = value_threshold(sc, co, target, confidence)
    axis.default_threshold = NEVER
    if pool_thin:
        pool_thin_values(axis, dict(zip(axis.values, zip(scores, correct, strict=True), strict=True)),
                         target, confidence, unproven=pool_unproven)


def pool_thin_values(
    axis: Axis, predictions: dict[str, tuple[np.ndarray, np.ndarray]], target: float,
    confidence: float, unproven: bool = False,
) -> dict | None:
    """Give the axis's *thin* values (proposed on calibration fewer times than a bound needs even
    when every one is right: 149 for .98 at 95%) one shared cut, fitted by the same lower-bound
    rule on all their predictions together.

    What it promises: the auto tags of the thin values, taken together, reach the target at the
    stated confidence — not each thin value alone (a value with its own proof keeps its own cut).
    Why: on fashion-small 89 of 129 articleType values can never prove .98 alone, whatever their
    scores, and the items of those values are never auto-applied. A value is thin by its count
    alone, whatever its record, so no choice made after looking at outcomes inflates the pool's
    bound; a bad thin value raises the shared cut for all of them, and a value with evidence enough
    that fails on its own record stays off. A thin value whose own record at the shared cut is
    under the target beyond doubt (its upper bound, as the live audit judges) stays off too:
    taking out the worst after the group's bound was counted with them can only lower the
    group's misses. The live audit then watches each value on its own. Records the pool in
    ``axis.evidence[value]["pool"]``; returns its evidence, or None when no value is thin.

    With ``unproven``, every value that did not prove the target alone joins, whatever its count.
    Why: a value needs far more than 149 predictions to prove .98 unless it is flawless (Clutches,
    204 right of 206, bound .970; Lipstick 194 of 195, .976), so values between "thin" and
    "plenty" were never auto-applied on a 99% record. Joining on a failed proof selects the pool's
    members by their outcomes, but only ever for the worse: a member is in because its own record
    could not carry it, so the pool's record is, if anything, worse than its members' truth. The
    upper-bound rule above keeps out every member whose own record at the shared cut is provably
    under the target."""
    need = needed_for_auto(target, confidence)
    thin = [v for v in axis.values
            if not axis.evidence[v]["auto"] and len(predictions[v][0]) > 0
            and (unproven or len(predictions[v][0]) < need)]
    if not thin:
        return None
    sc = np.concatenate([predictions[v][0] for v in thin])
    co = np.concatenate([predictions[v][1] for v in thin])
    cut, ev = value_threshold(sc, co, target, confidence)
    pool = {"values": len(thin), "proposed": ev["proposed"], "n": ev["n"], "hits": ev["hits"],
            "lower_bound": ev["lower_bound"], "threshold": cut, "auto": ev["auto"]}
    if ev["auto"]:
        for v in thin:
            s, c = predictions[v]
            above = s >= cut
            n, hits = int(above.sum()), int(c[above].sum())
            at_cut = {"n": n, "hits": hits,  # its own record at the pool's cut
                      "lower_bound": _floor4(float(precision_lower_bound(hits, n, confidence)))}
            if n and precision_upper_bound(hits, n, confidence) < target:
                # Its own best evidence stays as it was (what it would need to be auto alone).
                pool["left_out"] = pool.get("left_out", 0) + 1
                axis.evidence[v].update(pool=pool, left_out={
                    "reason": "its own record at the pool's cut is under the target", **at_cut})
                continue
            axis.thresholds[v] = cut
            axis.evidence[v].update(at_cut, pool=pool, threshold=cut, auto=True, pooled=True)
    return pool


def fit_thresholds(
    axis: Axis, probs: np.ndarray, y: np.ndarray, target: float, confidence: float = CONFIDENCE,
    pool_thin: bool = False, pool_unproven: bool = False,
) -> None:
    """Set ``axis.thresholds``, ``axis.evidence`` (per value) and ``axis.default_threshold`` from
    calibration scores ``probs`` and targets ``y`` (as ``shared.ml.labels.targets`` builds them)."""
    if axis.kind == "single":
        keep = y != -1
        p, yy = probs[keep], y[keep]
        top = p.argmax(1)
        score = p.max(1)
        correct = top == yy
        sel = [top == k for k in range(len(axis.values))]
        per_value(axis, [score[s] for s in sel], [correct[s] for s in sel], target, confidence,
                  pool_thin, pool_unproven)
        return
    keep = (y >= 0).all(axis=1)
    p, yy = probs[keep], y[keep] > 0.5
    # A multi-label value is proposed when its score passes 0.5; precision is over those.
    sel = [p[:, k] >= 0.5 for k in range(len(axis.values))]
    per_value(axis, [p[s, k] for k, s in enumerate(sel)], [yy[s, k] for k, s in enumerate(sel)],
              target, confidence, pool_thin, pool_unproven)


# An axis whose served head gives at least this many auto tags on the calibration part must reach
# the target there too (fewer: too little evidence to overrule the cross-fitted bound).
CHECK_MIN_AUTO = 150
CHECK_STEP = 0.0005


def check_served(axis: Axis, probs: np.ndarray, y: np.ndarray, target: float) -> dict | None:
    """Check a single-label axis's cuts, fitted on cross-fitted fold heads' scores, on the served
    head's own scores ``probs`` of the calibration part (its weights never trained on it): the
    served head is a little more confident than the fold heads, so the same cut can let through
    more than the folds proved (fashion-small baseColour: .9775 there, .979 on validation).
    With at least ``CHECK_MIN_AUTO`` auto tags and a precision under ``target``, every cut of the
    axis is raised by the smallest multiple of ``CHECK_STEP`` that brings it to the target (a cut
    pushed past 1 never applies). Returns what it saw and did, or None when there is nothing to
    check (multi-label axis, too few auto tags)."""
    if axis.kind != "single":
        return None
    keep = y >= 0
    p, yy = probs[keep], y[keep]
    top, score = p.argmax(1), p.max(1)
    right = top == yy
    base = np.array([axis.threshold(v) for v in axis.values])
    auto = score >= base[top]
    if auto.sum() < CHECK_MIN_AUTO:
        return None
    out = {"n": int(auto.sum()), "precision": round(float(right[auto].mean()), 4), "raised_by": 0.0}
    steps = 0
    while auto.any() and right[auto].mean() < target:
        steps += 1
        auto = score >= np.minimum(base + steps * CHECK_STEP, NEVER)[top]
    if steps:
        raised = steps * CHECK_STEP
        axis.thresholds = {v: (t if t >= NEVER else min(t + raised, NEVER))
                           for v, t in axis.thresholds.items()}
        for v, ev in (axis.evidence or {}).items():  # what `tagger train` lists follows the cut
            if ev.get("auto"):
                ev.update(threshold=axis.thresholds[v], raised_by=round(raised, 4),
                          auto=axis.thresholds[v] <= 1.0)
        out.update(raised_by=round(raised, 4), n_after=int(auto.sum()),
                   precision_after=round(float(right[auto].mean()), 4) if auto.any() else None)
    return out
