"""What the disagreement rule costs on clean products and catches on wrong photos.

On a model's own validation part (split rebuilt as bench/validation.py does): per axis, how many
items title and photo disagree on, and — since such an item applies nothing — how many auto tags
each axis loses and how many of those were wrong. Then the same titles with the photo of another
validation product (a seller's wrong photo): the share of products with at least one axis sent to
review. Not a test: prints JSON for docs/MODEL.md. Usage:
    python bench/evidence.py --dataset ../shared/data/fashion-small/dataset.yaml --model runs/X
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from shared.config import get_settings
from shared.ml.cache import EmbeddingCache
from shared.ml.features import image_features, text_features
from shared.ml.labels import targets
from shared.ml.predictor import Tagger
from shared.ml.train_config import recorded_config
from shared.ml.training import prepare


def _split(tagger: Tagger, dataset: str):
    trained = tagger.manifest["training"]
    cfg = recorded_config(trained["config"])
    data = prepare(dataset, cfg)
    if data.fingerprint != trained["fingerprint"]:
        raise SystemExit(f"{dataset} is not the data {tagger.version} was trained on")
    return data


def measure(tagger: Tagger, tx, tm, ix, im, y, lexical=None, offsets=None) -> dict:
    probs = tagger.probabilities(tx, tm, ix, im, lexical=lexical, offsets=offsets)
    ev = tagger.evidence(tx, tm, ix, im, lexical=lexical)
    found, held = ev.disagreements(), ev.held()
    out = {}
    for a in tagger.axes:
        if a.kind != "single":
            continue
        p, d = probs[a.name], held
        top = p.argmax(1)
        thr = np.array([a.threshold(v) for v in a.values])
        auto = p.max(1) >= thr[top]
        yy = y[a.name]
        right = top == yy
        lost = auto & d
        kept = auto & ~d
        out[a.name] = {
            "disagreements": int(found[a.name].sum()), "auto_withheld": int(lost.sum()),
            "withheld_wrong": int((lost & ~right).sum()),
            "auto_precision_before": round(float(right[auto].mean()), 4) if auto.any() else None,
            "auto_precision_after": round(float(right[kept].mean()), 4) if kept.any() else None,
            "auto_coverage_before": round(float(auto.mean()), 4),
            "auto_coverage_after": round(float(kept.mean()), 4),
        }
    return {"items_held": round(float(held.mean()), 4), "axes": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tagger = Tagger.load(args.model, cache=EmbeddingCache(get_settings().cache_dir / "embeddings.sqlite"))
    data = _split(tagger, args.dataset)
    val = data.parts["validation"]
    recs = [data.records[i] for i in val]
    both = np.array([bool(data.blobs[i]) and bool(r.text) for i, r in zip(val, recs, strict=True)])
    recs = [r for r, b in zip(recs, both, strict=True) if b]
    blobs = [data.blobs[i] for i, b in zip(val, both, strict=True) if b]
    tx, tm = text_features(tagger.text_encoder, [r.text for r in recs], tagger.cache)
    lex = tagger.lexical([r.text for r in recs])  # the n-grams of a model with the lexical channel
    off = tagger.offsets([r.text for r in recs])  # the text experts' scores of a model with them
    ix, im = image_features(tagger.image_encoder, blobs, tagger.cache)
    y = {a.name: targets(recs, a) for a in tagger.axes if a.kind == "single"}
    swap = np.random.default_rng(0).permutation(len(recs))
    swap = np.where(swap == np.arange(len(recs)), (swap + 1) % len(recs), swap)
    report = {"model": tagger.version, "n": len(recs),
              "clean": measure(tagger, tx, tm, ix, im, y, lex, off),
              "wrong_photo": measure(tagger, tx, tm, ix[swap], im[swap], y, lex, off)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
