"""A trained model on its own validation part (never trained or tuned on), as the product applies it.

`tagger train` prints this table when it finishes; this rebuilds the split exactly (same config,
checked against the manifest's fingerprint) so a model can be re-measured after the code that
applies it changed (guards, evidence), per input: title + photo, title only, photo only.
Not a test: prints a JSON report for docs/MODEL.md. Usage:
    python bench/validation.py --dataset ../shared/data/fashion-small/dataset.yaml --model runs/X
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from shared.config import get_settings
from shared.ml.cache import EmbeddingCache
from shared.ml.dataset import read_ids
from shared.ml.head_training import HeadTrainConfig
from shared.ml.predictor import Tagger
from shared.ml.report import evaluate_records
from shared.ml.training import TrainConfig, prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="dataset manifest (YAML) the model was trained on")
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: shipped)")
    ap.add_argument("--modality", action="append", choices=["both", "text", "image"],
                    help="inputs to evaluate with (repeatable; default: all three)")
    ap.add_argument("--holdout", type=Path, default=None, help="the ids file the model was trained with")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    tagger = Tagger.load(args.model, cache=EmbeddingCache(get_settings().cache_dir / "embeddings.sqlite"))
    trained = tagger.manifest["training"]
    conf = dict(trained["config"])
    head = HeadTrainConfig(**conf.pop("head"))
    cfg = TrainConfig(**{k: v for k, v in conf.items() if k in TrainConfig.__dataclass_fields__},
                      head=head)
    data = prepare(args.dataset, cfg, read_ids(args.holdout) if args.holdout else None)
    if data.fingerprint != trained["fingerprint"]:
        raise SystemExit(f"{args.dataset}: its split's fingerprint {data.fingerprint[:12]} is not the one "
                         f"{tagger.version} was trained on ({trained['fingerprint'][:12]})")
    val = data.parts["validation"]
    records = [data.records[i] for i in val]
    blobs = [data.blobs[i] for i in val]
    report = {"model": tagger.version, "dataset": data.name, "n": int(len(val)), "modalities": {}}
    for modality in args.modality or ["both", "text", "image"]:
        report["modalities"][modality] = evaluate_records(tagger, data.name, records, blobs, modality)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
