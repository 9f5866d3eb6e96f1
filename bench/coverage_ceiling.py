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

Not a test. Usage: python -m bench.coverage_ceiling runs/catalogues/fashion-small-scores.npz \\
    [--model runs/catalogues/fashion-small] [--target 0.98]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from shared.ml.calibration import NEVER


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scores", type=Path)
    ap.add_argument("--model", type=Path, default=None,
                    help="the model folder (default: the scores file's name without -scores.npz)")
    ap.add_argument("--target", type=float, default=0.98)
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


if __name__ == "__main__":
    main()
