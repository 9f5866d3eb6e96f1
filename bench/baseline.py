"""The plain baseline on the same rows and split as ``tagger train``: TF-IDF character n-grams +
logistic regression (shared/ml/baseline.py), calibrated and thresholded like the model (the same
Clopper-Pearson rule on the calibration part), scored on the validation part.

Not a test: prints a JSON report (per axis, the same keys as the model's training report) for
docs/MODEL.md, beside the model's own validation table. Usage:
    python bench/baseline.py --dataset ../shared/data/fashion-small/dataset.yaml [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from shared.config import get_settings
from shared.ml.baseline import Baseline
from shared.ml.calibration import fit_thresholds
from shared.ml.evaluation import evaluate_probs
from shared.ml.labels import build_axes, targets
from shared.ml.training import TrainConfig, prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="dataset manifest (YAML)")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()
    cfg = TrainConfig()
    target = get_settings().target_precision
    t0 = time.perf_counter()
    data = prepare(args.dataset, cfg)  # the split tagger train makes: same seed, same groups
    recs, parts = data.records, data.parts
    axes = copy.deepcopy(build_axes([recs[i] for i in parts["train"]], data.kinds, cfg.min_value_count))
    y = {a.name: targets(recs, a) for a in axes}
    texts = [r.text for r in recs]
    pick = {k: ([texts[i] for i in v], {a.name: y[a.name][v] for a in axes}) for k, v in parts.items()}
    model = Baseline.fit(axes, *pick["train"], seed=cfg.seed)
    cal = model.probabilities(axes, pick["calibration"][0])
    for a in axes:  # logistic regression's probabilities, thresholded by the model's rule
        fit_thresholds(a, cal[a.name], pick["calibration"][1][a.name], target, cfg.confidence)
    report = {
        "dataset": data.name, "fingerprint": data.fingerprint, "baseline": "tfidf-char1-4+logreg-C10",
        "n": {k: int(len(v)) for k, v in parts.items()}, "target_precision": target,
        "axes": evaluate_probs(axes, model.probabilities(axes, pick["validation"][0]), pick["validation"][1]),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
