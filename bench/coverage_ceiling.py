"""How much auto coverage a single-label axis could have, and what the per-value bound lets through.

Reads the scores ``python -m bench.catalogues`` leaves beside each model (``runs/catalogues/
<name>-scores.npz``: cross-fitted calibration logits, the validation part's probabilities, every
record's targets) and prints, per single-label axis of the validation part:

- ``rule``: coverage and precision of the thresholds as fitted (the lower-bound rule on the
  cross-fitted scores; before novelty abstention and joint decoding, so a little above the report);
- ``oracle``: the most coverage any per-value thresholds could give at precision >= target *on the
  validation part itself*: each value's lowest cut whose validation precision (a point estimate,
  no bound) reaches the target, chosen after seeing the answers. No rule can honestly beat it with
  this model's scores; it is a ceiling, never a result;
- ``rare``: the share of validation items whose true value had fewer than 149 calibration
  predictions (the fewest that can reach a .98 bound at 95%): out of reach of any per-value bound.

With ``--rankings``, a second table re-cuts every value by the same lower-bound rule on the
cross-fitted scores, ranking a value's predictions by the top probability (the rule as trained,
without the served-head check), by the margin between the top two, or by top x margin: within one
value only the order matters, so only another order could add coverage (docs/MODEL.md: it did not).

With ``--pools``, a third table re-fits every axis's thresholds on the cross-fitted scores by
the rule with no pool, with the thin values pooled (``tagger train``'s default with titles), and
with every unproven value pooled (``--pool-unproven``), and gives each one's validation coverage
and precision, the pooled values' auto tags together (right of all) and the worst three alone.

Not a test. Usage: python -m bench.coverage_ceiling runs/catalogues/fashion-small-scores.npz \\
    [--model runs/catalogues/fashion-small] [--target 0.98] [--rankings] [--pools]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from shared.ml.calibration import NEVER, fit_thresholds, probabilities, softmax, value_threshold
from shared.ml.labels import Axis

RANKINGS = ("top", "margin", "top*margin")


def ranking(probs: np.ndarray, kind: str) -> np.ndarray:
    """What orders one value's predictions: the top probability, the margin to the second, or both."""
    s = np.sort(probs, axis=1)
    top, margin = s[:, -1], s[:, -1] - s[:, -2]
    return {"top": top, "margin": margin, "top*margin": top * margin}[kind]


def recut_coverage(cal_probs: np.ndarray, cal_y: np.ndarray, val_probs: np.ndarray, val_y: np.ndarray,
                   kind: str, target: float) -> tuple[float, float]:
    """Validation coverage and precision of per-value cuts fitted on the cross-fitted scores by the
    lower-bound rule (shared.ml.calibration.value_threshold), each value ranked by ``kind``."""
    tc, sc, rc = cal_probs.argmax(1), ranking(cal_probs, kind), cal_probs.argmax(1) == cal_y
    tv, sv, rv = val_probs.argmax(1), ranking(val_probs, kind), val_probs.argmax(1) == val_y
    covered = np.zeros(len(tv), dtype=bool)
    for k in range(cal_probs.shape[1]):
        cut, _ = value_threshold(sc[tc == k], rc[tc == k], target)
        if cut < NEVER:
            covered |= (tv == k) & (sv >= cut)
    return covered.mean(), (rv[covered].mean() if covered.any() else float("nan"))


def oracle_coverage(probs: np.ndarray, y: np.ndarray, target: float) -> tuple[float, float]:
    """Coverage and precision of the best per-value cuts chosen on these very labels."""
    top, score, right = probs.argmax(1), probs.max(1), probs.argmax(1) == y
    covered = np.zeros(len(y), dtype=bool)
    for v in np.unique(top):
        idx = np.nonzero(top == v)[0]
        order = idx[np.argsort(-score[idx], kind="stable")]
        prec = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
        ok = np.nonzero(prec >= target)[0]
        if len(ok):
            covered[order[: ok.max() + 1]] = True
    n = covered.sum()
    return n / len(y), (right[covered].mean() if n else float("nan"))


POOLS = {"no pool": (False, False), "thin pooled": (True, False), "unproven pooled": (True, True)}


def pooled_rules(name: str, spec: dict, z: np.lib.npyio.NpzFile, temperature: float,
                 target: float) -> list[str]:
    """One table row per pooling rule: thresholds re-fitted on the cross-fitted scores, measured
    on the validation part (before abstention, joint decoding and the served-head check)."""
    cal, val = z["calibration_idx"], z["validation_idx"]
    axis = Axis(name=name, kind=spec.get("kind", "single"), values=spec["values"], temperature=temperature)
    yc, yv = z[f"y:{name}"][cal], z[f"y:{name}"][val]
    pc, pv = probabilities(axis, z[f"cal_logits:{name}"]), z[f"val_probs:{name}"]
    single = axis.kind == "single"
    rows = []
    for rule, (thin, unproven) in POOLS.items():
        fit_thresholds(axis, pc, yc, target, pool_thin=thin, pool_unproven=unproven)
        cuts = np.array([axis.thresholds[v] for v in axis.values])
        if single:
            keep = yv >= 0
            top, score, y = pv[keep].argmax(1), pv[keep].max(1), yv[keep]
            auto, right = score >= cuts[top], top == y
            total = len(y)
        else:
            keep = (yv >= 0).all(axis=1)
            auto2, truth = pv[keep] >= np.maximum(cuts, 0.5), yv[keep] > 0.5
            top = np.nonzero(auto2)[1]
            auto, right = np.ones(len(top), bool), truth[auto2]
            total = int((pv[keep] >= 0.5).sum())
        pooled = [k for k, v in enumerate(axis.values) if axis.evidence[v].get("pooled")]
        worst = sorted((right[auto & (top == k)].mean(), int((auto & (top == k)).sum()), axis.values[k])
                       for k in pooled if (auto & (top == k)).sum() >= 20)[:3]
        prec = right[auto].mean() if auto.any() else float("nan")
        together = auto & np.isin(top, pooled)
        rows.append(f"| {name} | {rule} | {auto.sum() / max(total, 1):.3f} / {prec:.4f} | "
                    f"{len(pooled)} | {int(right[together].sum())} / {int(together.sum())} | "
                    + ", ".join(f"{v} {p:.3f} (n {n})" for p, n, v in worst) + " |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scores", type=Path)
    ap.add_argument("--model", type=Path, default=None,
                    help="the model folder (default: the scores file's name without -scores.npz)")
    ap.add_argument("--target", type=float, default=0.98)
    ap.add_argument("--rankings", action="store_true",
                    help="also re-cut each value on the cross-fitted scores by other rankings")
    ap.add_argument("--pools", action="store_true",
                    help="also re-fit every axis with no pool, thin values pooled, unproven pooled")
    args = ap.parse_args()
    model = args.model or args.scores.with_name(args.scores.name.replace("-scores.npz", ""))
    manifest = json.loads((model / "manifest.json").read_text())
    z = np.load(args.scores)
    val = z["validation_idx"]
    print("| axis | values | accuracy | rule: coverage / precision | oracle: coverage / precision | rare |")
    print("|---|---:|---:|---|---|---:|")
    for name, spec in manifest["axes"].items():
        if spec.get("kind", "single") != "single":
            continue
        probs, y = z[f"val_probs:{name}"], z[f"y:{name}"][val]
        keep = y >= 0
        probs, y = probs[keep], y[keep]
        values = spec["values"]
        cuts = np.array([spec["thresholds"].get(v, NEVER) for v in values])
        top, score = probs.argmax(1), probs.max(1)
        auto = score >= cuts[top]
        right = top == y
        oc, op = oracle_coverage(probs, y, args.target)
        proposed = np.bincount(z[f"cal_logits:{name}"].argmax(1), minlength=len(values))
        rare = (proposed[y] < 149).mean()
        rp = right[auto].mean() if auto.any() else float("nan")
        print(f"| {name} | {len(values)} | {right.mean():.3f} | {auto.mean():.3f} / {rp:.3f} | "
              f"{oc:.3f} / {op:.3f} | {rare:.3f} |")
    temps = dict(zip(manifest["axes"], z["temperatures"], strict=True))
    if args.pools:
        print("\n| axis | rule | validation coverage / precision | values pooled | pooled values' "
              "auto tags: right / all | worst 3 alone (n >= 20) |\n|---|---|---|---:|---|---|")
        for name, spec in manifest["axes"].items():
            print("\n".join(pooled_rules(name, spec, z, float(temps[name]), args.target)))
    if not args.rankings:
        return
    cal = z["calibration_idx"]
    print("\n| axis | " + " | ".join(f"{k}: coverage / precision" for k in RANKINGS) + " |")
    print("|---|" + "---|" * len(RANKINGS))
    for name, spec in manifest["axes"].items():
        if spec.get("kind", "single") != "single":
            continue
        yc, yv = z[f"y:{name}"][cal], z[f"y:{name}"][val]
        pc, pv = softmax(z[f"cal_logits:{name}"], float(temps[name])), z[f"val_probs:{name}"]
        cells = [recut_coverage(pc[yc >= 0], yc[yc >= 0], pv[yv >= 0], yv[yv >= 0], k, args.target)
                 for k in RANKINGS]
        print(f"| {name} | " + " | ".join(f"{c:.3f} / {p:.4f}" for c, p in cells) + " |")


if __name__ == "__main__":
    main()
