"""Give an existing model the disagreement table that `tagger train` now fits (shared.ml.evidence).

Rebuilds the model's split from its manifest (checked against the fingerprint), fits the table on
the calibration part exactly as training does, re-measures the validation report with it, and
rewrites the artifact in place; head, adapter, thresholds and guards are unchanged, and the
manifest's ``training.amended`` says so. For models trained before the table existed. Usage:
    python bench/amend_disagreement.py --dataset ../shared/data/fashion-small/dataset.yaml --model DIR
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shared.config import get_settings
from shared.ml.artifact import load_artifact, save_artifact
from shared.ml.cache import EmbeddingCache
from shared.ml.evidence import alone_axes, fit_trust, input_evidence, trusted_axes
from shared.ml.features import image_features, text_features
from shared.ml.head_training import Features
from shared.ml.labels import targets
from shared.ml.manifest import ModelManifest
from shared.ml.predictor import Tagger
from shared.ml.train_config import recorded_config
from shared.ml.training import MODALITIES, _validation_report, prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--holdout", type=Path, default=None, help="the ids file it was trained with")
    args = ap.parse_args()
    tagger = Tagger.load(args.model, cache=EmbeddingCache(get_settings().cache_dir / "embeddings.sqlite"))
    trained = tagger.manifest["training"]
    cfg = recorded_config(trained["config"])
    from shared.ml.dataset import read_ids

    data = prepare(args.dataset, cfg, read_ids(args.holdout) if args.holdout else None)
    if data.fingerprint != trained["fingerprint"]:
        raise SystemExit(f"{args.dataset} is not the data {tagger.version} was trained on")
    texts = [r.text for r in data.records]
    tx, tm = text_features(tagger.text_encoder, texts, tagger.cache, True)
    ix, im = image_features(tagger.image_encoder, data.blobs, tagger.cache, True)
    feats = Features(tx, tm, ix, im)
    y = {a.name: targets(data.records, a) for a in tagger.axes}
    target = tagger.manifest.get("target_precision") or 0.98
    cal, val = data.parts["calibration"], data.parts["validation"]
    c = feats.take(cal)
    table = fit_trust(input_evidence(tagger.head, tagger.axes, c.text, c.text_mask, c.image, c.image_mask,
                                     tagger.device), {n: v[cal] for n, v in y.items()}, target,
                      cfg.confidence)
    trusted = trusted_axes(table)
    alone = alone_axes(table)
    v = feats.take(val)
    report = {m: _validation_report(tagger.head, tagger.axes, v.only(m), {n: a[val] for n, a in y.items()},
                                    tagger.device, tagger.guard, tagger.consistency,
                                    [texts[i] for i in val], tagger.text_encoder, m, table)
              for m in MODALITIES}
    art = load_artifact(args.model)
    m = dict(art.manifest)
    m["metrics"] = {**m.get("metrics", {}), "modalities": report}
    m["disagreement"] = table
    m["training"] = {**m["training"], "amended": {
        **(m["training"].get("amended") or {}),
        "disagreement_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "disagreement": "disagreement table fitted on the model's own calibration part (split rebuilt "
                        "from the fingerprint); validation report re-measured with it; weights, "
                        "thresholds and guards unchanged"}}
    art.manifest = ModelManifest.model_validate(m).to_json()  # keys in the schema's order
    save_artifact(args.model, art)
    print(f"{tagger.version}: trusted axes {sorted(trusted)}; alone {alone}; "
          f"{int(np.sum([r['title']['n'] for r in table['axes'].values()]))} solo title tags checked")


if __name__ == "__main__":
    main()
