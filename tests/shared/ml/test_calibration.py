"""Temperature scaling and thresholds with a precision guarantee, on data with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from shared.config import Settings
from shared.ml.bounds import precision_lower_bound
from shared.ml.calibration import (
    NEVER,
    fit_temperature,
    fit_thresholds,
    per_value,
    softmax,
    value_threshold,
)
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


def test_precision_lower_bound_known_values() -> None:
    # All right: the bound is (1 - confidence) ** (1 / n); .98 needs 149 out of 149 at 95%.
    assert precision_lower_bound(149, 149) >= 0.98
    assert precision_lower_bound(148, 148) < 0.98
    assert precision_lower_bound(149, 149) == pytest.approx(0.05 ** (1 / 149))
    assert precision_lower_bound(0, 10) == 0.0 and precision_lower_bound(0, 0) == 0.0
    # Exact: at the bound, seeing that many hits or more has probability 1 - confidence.
    hits, n = np.array([50, 90, 400]), np.array([60, 100, 410])
    lb = precision_lower_bound(hits, n, confidence=0.9)
    assert lb.shape == (3,)
    assert binom.sf(hits - 1, n, lb) == pytest.approx([0.1, 0.1, 0.1], abs=1e-6)
    assert (lb < hits / n).all()
    assert precision_lower_bound(50, 60, 0.99) < precision_lower_bound(50, 60, 0.9)
    with pytest.raises(ValueError):
        precision_lower_bound(5, 4)


def test_a_value_needs_evidence_enough_to_be_auto() -> None:
    right = np.linspace(0.99, 0.9, 148)
    thr, ev = value_threshold(right, np.ones(148, bool), target=0.98)
    assert thr == NEVER and not ev["auto"]
    assert ev["n"] == ev["hits"] == 148 and ev["lower_bound"] < 0.98
    scores = np.append(right, 0.85)
    thr, ev = value_threshold(scores, np.ones(149, bool), target=0.98)
    assert thr == 0.85 and ev["auto"] and ev["n"] == 149 and ev["lower_bound"] >= 0.98
    assert value_threshold(np.zeros(0), np.zeros(0, bool), 0.98)[0] == NEVER


def test_the_bound_refuses_what_a_point_estimate_accepts() -> None:
    """100 of 100 right is a point estimate of 1.0 >= .98, which the old thresholds accepted;
    the bound (.971) says the evidence cannot promise .98."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.6, 1.0, 100)
    correct = np.ones(100, bool)
    assert correct.mean() >= 0.98  # what the point estimate saw
    thr, ev = value_threshold(scores, correct, target=0.98)
    assert thr == NEVER and ev["lower_bound"] == pytest.approx(0.9705, abs=1e-4)
    # With a lower target the same evidence suffices, from the lowest score on.
    thr, ev = value_threshold(scores, correct, target=0.95)
    assert thr == scores.min() and ev["auto"]


def test_ties_are_all_in_or_all_out() -> None:
    # 160 right at .99 clear .98 (bound .9815); at .95, three right and one wrong tie. Cutting
    # after the three would still clear it, but a threshold cannot split a tie: all four go in,
    # and 163 of 164 does not clear .98.
    scores = np.array([0.99] * 160 + [0.95] * 4)
    correct = np.array([True] * 163 + [False])
    thr, ev = value_threshold(scores, correct, target=0.98)
    assert thr == 0.99 and ev["n"] == 160
    assert precision_lower_bound(163, 163) >= 0.98 > precision_lower_bound(163, 164)


def test_thresholds_reach_target_precision_and_refuse_hopeless_values() -> None:
    rng = np.random.default_rng(1)
    n = 20000
    y = rng.integers(0, 3, size=n)
    probs = np.full((n, 3), 0.05)
    score = rng.uniform(0.4, 1.0, size=n)
    # value 0: right exactly with probability = score; 1: always wrong; 2: at best half right
    right = rng.uniform(size=n) < score
    pred = np.where(right, y, (y + 1) % 3)
    pred[y == 1] = 2  # the model says 2 where the truth is 1
    probs[np.arange(n), pred] = score
    axis = Axis("a", "single", ["0", "1", "2"])
    fit_thresholds(axis, probs, y, target=0.95)
    for hopeless in ("1", "2"):
        assert axis.thresholds[hopeless] == NEVER and not axis.evidence[hopeless]["auto"]
    assert axis.default_threshold == NEVER and set(axis.thresholds) == set(axis.values)
    m = axis_metrics(axis, probs, y)
    assert m["auto_precision"] >= 0.95
    assert 0 < m["auto_coverage"] < 1
    ev = axis.evidence["0"]  # what the threshold lets through, as recorded
    passed = (probs.argmax(1) == 0) & (probs.max(1) >= axis.thresholds["0"])
    assert ev["auto"] and ev["n"] == passed.sum() and ev["hits"] == (passed & (y == 0)).sum()
    assert ev["lower_bound"] >= 0.95 and ev["confidence"] == 0.95


def test_multi_label_values_are_bounded_over_their_proposals() -> None:
    rng = np.random.default_rng(2)
    n = 1000
    y = (rng.uniform(size=(n, 2)) < 0.5).astype(np.float32)
    probs = np.where(y > 0, rng.uniform(0.6, 1.0, (n, 2)), rng.uniform(0.0, 0.55, (n, 2)))
    probs[:, 1] = rng.uniform(0, 1, n)  # value b: scores say nothing
    axis = Axis("tags", "multi", ["a", "b"])
    fit_thresholds(axis, probs, y, target=0.9)
    assert axis.evidence["a"]["auto"] and axis.thresholds["a"] >= 0.5
    assert axis.evidence["a"]["proposed"] == (probs[:, 0] >= 0.5).sum()
    assert axis.thresholds["b"] == NEVER
    m = axis_metrics(axis, probs, y)
    assert set(m) == {"n", "micro_f1", "macro_f1", "auto_precision", "auto_precision_lower", "auto_coverage",
                      "abstentions", "withheld"}
    assert m["auto_precision"] >= 0.9 and m["auto_precision_lower"] <= m["auto_precision"]


def test_evidence_round_trips_and_older_axes_still_load() -> None:
    axis = Axis("a", "single", ["x"])
    old = axis.to_json()
    assert "evidence" not in old and Axis.from_json("a", old).evidence == {}
    axis.evidence = {"x": {"n": 3, "hits": 3, "lower_bound": 0.3684, "auto": False}}
    assert Axis.from_json("a", json.loads(json.dumps(axis.to_json()))).evidence == axis.evidence


def test_cross_fitted_training_only_auto_applies_bounded_values(
    tmp_path: Path, settings: Settings, sample_manifest: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``tagger train`` on the sample with 3 grouped folds: every value with a finite threshold
    has evidence whose lower bound clears the target, over out-of-fold scores of train +
    calibration, and the command names the values that will never be auto-applied."""
    from typer.testing import CliRunner

    from cli.main import app
    from shared.config import get_settings

    monkeypatch.setenv("TAGGER_CACHE_DIR", str(settings.cache_dir))
    monkeypatch.setenv("TAGGER_DEVICE", "cpu")
    get_settings.cache_clear()
    target = 0.8  # the sample is too small for .98 (149 straight hits per value)
    from shared.ml.dataset import load_manifest, load_records

    ids = [r.id for r in load_records(load_manifest(sample_manifest))]
    (tmp_path / "bad.txt").write_text("no-such-id\n")
    bad = CliRunner().invoke(app, ["train", "--dataset", str(sample_manifest), "--out",
                                   str(tmp_path / "x"), "--holdout", str(tmp_path / "bad.txt")])
    assert bad.exit_code == 2 and "no-such-id" in bad.output and not (tmp_path / "x").exists()
    (tmp_path / "held.txt").write_text("\n".join(ids[-30:]) + "\n")  # a fixed validation part
    res = CliRunner().invoke(app, [
        "train", "--dataset", str(sample_manifest), "--out", str(tmp_path / "m"),
        "--text-epochs", "1", "--head-epochs", "15", "--target-precision", str(target),
        "--calibration-folds", "3", "--confidence", "0.9", "--holdout", str(tmp_path / "held.txt"),
        "--label-smoothing", "0", "--class-weight-power", "0"])
    get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "m" / "manifest.json").read_text())
    cal, n = m["training"]["calibration"], m["training"]["n"]
    assert n["validation"] == 30
    head_cfg = m["training"]["config"]["head"]
    assert (head_cfg["label_smoothing"], head_cfg["class_weight_power"]) == (0, 0)
    assert cal["method"] == "cross-fit" and cal["k"] == 3 and cal["confidence"] == 0.9
    assert cal["n"] == n["train"] + n["calibration"] == sum(f["scored"] for f in cal["folds"])
    assert "calibration_s" in m["training"]["timings_s"]
    finite = 0
    for name, a in m["axes"].items():
        assert a["default_threshold"] == NEVER and set(a["evidence"]) == set(a["values"])
        never = [v for v in a["values"] if a["thresholds"][v] == NEVER]
        assert f"{name}: {len(a['values']) - len(never)} of {len(a['values'])} auto" in res.output
        for v, ev in a["evidence"].items():
            assert ev["confidence"] == 0.9
            if a["thresholds"][v] < NEVER:
                finite += 1
                assert ev["auto"] and ev["lower_bound"] >= target and ev["n"] <= ev["proposed"]
                assert ev["lower_bound"] <= precision_lower_bound(ev["hits"], ev["n"], 0.9)
            else:
                assert not ev["auto"] and ev["lower_bound"] < target
        if never:
            top = max(never, key=lambda v: a["evidence"][v]["proposed"])
            assert f"{top} ({a['evidence'][top]['proposed']} predicted" in res.output
    assert finite > 0


def test_folds_keep_duplicate_groups_together_and_even() -> None:
    from shared.ml.split import grouped_folds

    rng = np.random.default_rng(3)
    groups = np.concatenate([np.full(40, 0), np.full(25, 1), rng.integers(2, 400, 600)])
    fold = grouped_folds(groups, 5, seed=0)
    for g in np.unique(groups):
        assert len(np.unique(fold[groups == g])) == 1
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= 5 and (grouped_folds(groups, 5, seed=0) == fold).all()


def _served(n: int, wrong_at: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-value probabilities (value 0 on top with ``score``) and targets: wrong where asked."""
    probs = np.stack([score, 1 - score], axis=1)
    y = np.zeros(n, dtype=np.int64)
    y[wrong_at] = 1
    return probs, y


def test_the_served_head_must_keep_what_the_folds_proved() -> None:
    from shared.ml.calibration import CHECK_MIN_AUTO, NEVER, check_served

    n = 400
    score = np.linspace(0.90, 0.999, n)
    probs, y = _served(n, np.arange(0, 40, 4), score)  # 10 wrong, all among the least confident
    axis = Axis("a", "single", ["x", "z"], thresholds={"x": 0.9, "z": NEVER}, default_threshold=NEVER)
    axis.evidence = {"x": {"auto": True, "threshold": 0.9}, "z": {"auto": False, "threshold": NEVER}}
    seen = check_served(axis, probs, y, 0.98)
    assert seen["n"] == n and seen["precision"] == 0.975 and seen["raised_by"] > 0
    assert seen["precision_after"] >= 0.98 and seen["n_after"] < n
    assert axis.thresholds["x"] == pytest.approx(0.9 + seen["raised_by"]) and axis.thresholds["z"] == NEVER
    assert axis.evidence["x"]["threshold"] == axis.thresholds["x"] and axis.evidence["x"]["auto"]
    # At the new cut the served head reaches the target; one step lower it did not.
    top_ok = score >= axis.thresholds["x"]
    assert (y[top_ok] == 0).mean() >= 0.98
    # Already precise enough: untouched. Too few auto tags to say: not checked at all.
    fine = Axis("a", "single", ["x", "z"], thresholds={"x": 0.9, "z": NEVER}, default_threshold=NEVER)
    assert check_served(fine, *_served(n, np.array([0]), score), 0.98)["raised_by"] == 0.0
    assert fine.thresholds["x"] == 0.9
    few = Axis("a", "single", ["x", "z"], thresholds={"x": 0.9, "z": NEVER}, default_threshold=NEVER)
    m = CHECK_MIN_AUTO - 1
    assert check_served(few, *_served(m, np.arange(0, m, 2), score[:m]), 0.98) is None
    assert few.thresholds["x"] == 0.9
    multi = Axis("m", "multi", ["x", "z"])
    assert check_served(multi, probs, np.zeros((n, 2)), 0.98) is None


def _thin_axis(n_values: int, per_value: int, right_share: float, seed: int = 0):
    """Calibration predictions of ``n_values`` rare values (``per_value`` each, too few to prove
    .98 alone) plus one common value with 400 predictions, all right; ``right_share`` of the rare
    values' predictions scoring above .9 are right, and everything under .9 is wrong."""
    rng = np.random.default_rng(seed)
    values = ["common"] + [f"rare{i}" for i in range(n_values)]
    preds = {"common": (rng.uniform(0.8, 1.0, 400), np.ones(400, bool))}
    for v in values[1:]:
        s = rng.uniform(0.6, 1.0, per_value)
        preds[v] = (s, (s > 0.9) & (rng.random(per_value) < right_share))
    return Axis("a", "single", values), preds


def fit_thresholds_from(axis: Axis, preds: dict, pool: bool) -> None:
    per_value(axis, [preds[v][0] for v in axis.values], [preds[v][1] for v in axis.values],
               0.98, 0.95, pool_thin=pool)


def test_thin_values_are_proven_together_and_only_together() -> None:
    axis, preds = _thin_axis(n_values=30, per_value=40, right_share=1.0)
    fit_thresholds_from(axis, preds, pool=False)
    assert all(axis.thresholds[v] == NEVER for v in axis.values[1:])  # 40 right of 40 proves nothing
    assert axis.thresholds["common"] < NEVER
    fit_thresholds_from(axis, preds, pool=True)
    pooled = [v for v in axis.values[1:] if axis.thresholds[v] < NEVER]
    assert pooled == axis.values[1:]
    cut = axis.thresholds["rare0"]
    assert 0.89 <= cut <= 0.95 and all(axis.thresholds[v] == cut for v in pooled)
    pool = axis.evidence["rare0"]["pool"]
    assert pool["values"] == 30 and pool["lower_bound"] >= 0.98 and axis.evidence["rare0"]["pooled"]
    assert "pool" not in axis.evidence["common"]  # a value with its own proof keeps its own cut
    # On fresh draws from the same values the pooled cut keeps the promise.
    _, fresh = _thin_axis(n_values=30, per_value=40, right_share=1.0, seed=1)
    s = np.concatenate([fresh[v][0] for v in pooled])
    c = np.concatenate([fresh[v][1] for v in pooled])
    assert c[s >= cut].mean() >= 0.98


def test_a_pool_of_imprecise_thin_values_stays_off() -> None:
    axis, preds = _thin_axis(n_values=30, per_value=40, right_share=0.9)
    fit_thresholds_from(axis, preds, pool=True)
    assert all(axis.thresholds[v] == NEVER for v in axis.values[1:])
    assert not any(axis.evidence[v]["auto"] for v in axis.values[1:])


def test_a_value_with_evidence_enough_that_fails_is_not_pooled() -> None:
    axis, preds = _thin_axis(n_values=30, per_value=40, right_share=1.0)
    s = np.linspace(0.95, 1.0, 300)
    preds["common"] = (s, np.arange(300) % 10 != 0)  # 300 proposals, 90% right: its own record
    fit_thresholds_from(axis, preds, pool=True)
    assert axis.thresholds["common"] == NEVER and "pool" not in axis.evidence["common"]
    assert axis.thresholds["rare0"] < NEVER


def test_thin_values_are_pooled_by_default_only_where_listings_carry_titles() -> None:
    from shared.ml.dataset import Record
    from shared.ml.train_config import TrainConfig, pool_thin_choice

    photos = [Record("a", "", "a.jpg", {}), Record("b", " ", "b.jpg", {})]
    titled = [Record("a", "", "a.jpg", {}), Record("b", "red dress", "b.jpg", {})]
    assert TrainConfig().pool_thin_values is None  # chosen by the catalogue
    assert pool_thin_choice(None, titled, [b"x", b"y"])[0] is True
    assert pool_thin_choice(None, titled, [None, None])[0] is True  # titles without photos
    on, why = pool_thin_choice(None, photos, [b"x", b"y"])
    assert on is False and "photos without titles" in why
    assert pool_thin_choice(True, photos, [b"x", b"y"]) == (True, "--pool-thin-values")  # the option wins
    assert pool_thin_choice(False, titled, [b"x", b"y"]) == (False, "--no-pool-thin-values")


def test_a_thin_value_whose_own_record_fails_at_the_pools_cut_is_left_out() -> None:
    axis, preds = _thin_axis(n_values=60, per_value=60, right_share=1.0)
    s = np.linspace(0.95, 1.0, 40)
    preds["rare0"] = (s, np.arange(40) % 10 != 0)  # 36 of 40 right above any cut: under .98 beyond doubt
    fit_thresholds_from(axis, preds, pool=True)
    assert axis.thresholds["rare1"] < NEVER and axis.evidence["rare1"]["pooled"]
    assert axis.thresholds["rare0"] == NEVER and not axis.evidence["rare0"]["auto"]
    left = axis.evidence["rare0"]["left_out"]
    assert "under the target" in left["reason"] and (left["n"], left["hits"]) == (40, 36)
    assert axis.evidence["rare1"]["pool"]["left_out"] == 1
    # Its own best evidence is kept beside, as for any value that is never auto.
    alone = value_threshold(*preds["rare0"], 0.98)[1]
    assert {k: axis.evidence["rare0"][k] for k in ("n", "hits", "lower_bound")} == \
        {k: alone[k] for k in ("n", "hits", "lower_bound")}


def test_unproven_values_join_the_pool_with_pool_unproven_unless_provably_under() -> None:
    """Twelve values of 250 predictions, 248 right (misses at ranks 100 and 200), cannot prove .98
    alone (bound .977 at best); with ``pool_unproven`` they prove it together. A value of 160
    predictions at 87.5% joins too, and is left out: its own record at the shared cut is provably
    under the target."""
    rng = np.random.default_rng(0)
    values = ["bad"] + [f"mid{i}" for i in range(12)]
    preds = {"bad": (rng.uniform(0.7, 1.0, 160), np.arange(160) % 8 != 0)}
    for v in values[1:]:
        s = rng.uniform(0.7, 1.0, 250)
        right = np.ones(250, bool)
        right[np.argsort(-s)[[100, 200]]] = False
        preds[v] = (s, right)
    axis = Axis("a", "single", values)
    scores, correct = [preds[v][0] for v in values], [preds[v][1] for v in values]
    per_value(axis, scores, correct, 0.98, 0.95, pool_thin=True)
    assert all(axis.thresholds[v] == NEVER for v in values)  # none is thin, none proves alone
    per_value(axis, scores, correct, 0.98, 0.95, pool_thin=True, pool_unproven=True)
    pool = axis.evidence["mid0"]["pool"]
    assert pool["values"] == 13 and pool["left_out"] == 1 and pool["lower_bound"] >= 0.98
    assert all(axis.evidence[v]["pooled"] and axis.thresholds[v] == pool["threshold"] for v in values[1:])
    assert axis.thresholds["bad"] == NEVER and not axis.evidence["bad"]["auto"]
    assert axis.evidence["bad"]["left_out"]["hits"] == 140
