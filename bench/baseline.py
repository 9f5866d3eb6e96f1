"""The plain baseline on the same rows and split as ``tagger train``: TF-IDF character n-grams +
logistic regression (shared/ml/baseline.py), calibrated and thresholded like the model (the same
Clopper-Pearson rule, on out-of-fold scores over train + calibration with ``--calibration-folds K``
as ``tagger train`` does by default, or on the calibration part with 0), scored on the validation
part. ``--holdout`` takes the same ids file as ``tagger train --holdout``.

Not a test: prints a JSON report (per axis, the same keys as the model's training report) for
docs/MODEL.md, beside the model's own validation table. Usage:
    python bench/baseline.py --dataset ../shared/data/fashion-small/dataset.yaml \
        [--calibration-folds 5] [--holdout ids.txt] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shared.config import get_settings
from shared.ml.baseline import Baseline
from shared.ml.calibration import fit_thresholds
from shared.ml.dataset import read_ids
from shared.ml.evaluation import evaluate_probs
from shared.ml.labels import build_axes, targets
from shared.ml.split import grouped_folds
from shared.ml.training import Prepared, TrainConfig, prepare


def baseline_report(data: Prepared, calibration_folds: int, cfg: TrainConfig) -> dict:
    """The baseline fitted on ``data``'s train part, calibrated like the model (out-of-fold over
    train + calibration with ``calibration_folds`` >= 2, else on the calibration part), scored on
    its validation part. A catalogue without any title has nothing for it to read: ``axes`` is
    then None and ``why`` says so."""
    target = cfg.target_precision or get_settings().target_precision
    t0 = time.perf_counter()
    recs, parts = data.records, data.parts
    report = {"dataset": data.name, "fingerprint": data.fingerprint, "baseline": "tfidf-char1-4+logreg-C10",
              "n": {k: int(len(v)) for k, v in parts.items()}, "target_precision": target,
              "calibration_folds": calibration_folds}
    texts = [r.text for r in recs]
    if not any(t.strip() for t in texts):
        return {**report, "axes": None, "why": "no record has a title"}
    axes = copy.deepcopy(build_axes([recs[i] for i in parts["train"]], data.kinds, cfg.min_value_count))
    y = {a.name: targets(recs, a) for a in axes}
    pick = {k: ([texts[i] for i in v], {a.name: y[a.name][v] for a in axes}) for k, v in parts.items()}
    model = Baseline.fit(axes, *pick["train"], seed=cfg.seed, show_progress=True)
    if calibration_folds >= 2:  # as shared.ml.cross_fit: each fold scored by a fit without it
        pool = np.sort(np.concatenate([parts["train"], parts["calibration"]]))
        fold = grouped_folds(data.groups[pool], calibration_folds, cfg.seed)
        cal = {a.name: np.zeros((len(pool), len(a.values))) for a in axes}
        for f in tqdm(range(calibration_folds), desc="baseline folds"):
            fit, held = pool[fold != f], pool[fold == f]
            m = Baseline.fit(axes, [texts[i] for i in fit], {a.name: y[a.name][fit] for a in axes},
                             seed=cfg.seed)
            for name, p in m.probabilities(axes, [texts[i] for i in held]).items():
                cal[name][fold == f] = p
        cal_y = {a.name: y[a.name][pool] for a in axes}
    else:
        cal, cal_y = model.probabilities(axes, pick["calibration"][0]), pick["calibration"][1]
    for a in axes:  # logistic regression's probabilities, thresholded by the model's rule
        fit_thresholds(a, cal[a.name], cal_y[a.name], target, cfg.confidence)
    report["axes"] = evaluate_probs(axes, model.probabilities(axes, pick["validation"][0]),
                                    pick["validation"][1])
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="dataset manifest (YAML)")
    ap.add_argument("--calibration-folds", type=int, default=0,
                    help="grouped folds of out-of-fold calibration scores (0: the calibration part)")
    ap.add_argument("--holdout", type=Path, default=None, help="ids file: the validation part")
    ap.add_argument("--near-duplicate-similarity", type=float, default=None,
                    help="as tagger train's option of that name (and its default): the same "
                    "groups, split and folds")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()
    cfg = TrainConfig(near_duplicate_similarity=args.near_duplicate_similarity)
    # The split tagger train makes: same seed, same groups, same holdout.
    data = prepare(args.dataset, cfg, read_ids(args.holdout) if args.holdout else None)
    text = json.dumps(baseline_report(data, args.calibration_folds, cfg), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
