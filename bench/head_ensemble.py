"""Would averaging several heads (different seeds) give scores that order right and wrong tags better?

Issue 10's coverage is bound by the scores' order within each value (docs/MODEL.md, "Another
ranking, tried"); an ensemble is the usual way to sharpen it. This trains ``--heads`` fusion heads
on a catalogue's train part exactly as ``tagger train`` does (same features through the embedding
cache, same head config and early stopping on the calibration part, seeds 0, 1, …), fits the text
experts once, and prints, per single-label axis of the validation part, for each head alone and for
the mean of the first k heads' logits (then + the experts, as served):

- accuracy, and the negative log-likelihood after a temperature fitted on the calibration part;
- ``oracle``: the most coverage per-value cuts chosen on the validation labels themselves could
  give at precision >= .98 (bench.coverage_ceiling's ceiling: it says whether the order improved,
  not what the lower-bound rule would cover).

Cheap next to the real thing: a full test would cross-fit every fold with k heads (k x the
calibration time). Not a test. Usage:
    python -m bench.head_ensemble [--data ../shared/data/fashion-small/dataset.yaml] [--heads 4]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.coverage_ceiling import oracle_coverage
from shared.config import get_settings
from shared.ml.cache import EmbeddingCache
from shared.ml.calibration import fit_temperature, probabilities
from shared.ml.cross_fit import head_logits
from shared.ml.experts import TextExperts
from shared.ml.head_training import train_head
from shared.ml.labels import build_axes, targets
from shared.ml.train_config import TrainConfig
from shared.ml.training import prepare
from shared.ml.training_inputs import encode_inputs


def row(tag: str, axes, logits_c: dict, logits_v: dict, yc: dict, yv: dict) -> str:
    cells = []
    for a in axes:
        if a.kind != "single":
            continue
        a.temperature = fit_temperature(a, logits_c[a.name], yc[a.name])
        keep = yv[a.name] >= 0
        p, y = probabilities(a, logits_v[a.name])[keep], yv[a.name][keep]
        nll = -np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)).mean()
        cells.append(f"{(p.argmax(1) == y).mean():.4f} / {nll:.4f} / {oracle_coverage(p, y, 0.98)[0]:.3f}")
    return f"| {tag} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared/data/fashion-small/dataset.yaml")
    ap.add_argument("--heads", type=int, default=4)
    args = ap.parse_args()
    cfg, s, device = TrainConfig(finetune_text=False), get_settings(), torch.device("cpu")
    data = prepare(args.data, cfg, None, show_progress=True)  # tagger train's split and defaults
    tr, ca, va = (data.parts[k] for k in ("train", "calibration", "validation"))
    axes = build_axes([data.records[i] for i in tr], data.kinds, min_count=cfg.min_value_count)
    y = {a.name: targets(data.records, a) for a in axes}
    cache = EmbeddingCache(s.cache_dir / "embeddings.sqlite")
    inputs = encode_inputs(data, axes, y, cfg, s, cache, True)  # frozen encoders, as tagger train's
    cache.close()
    feats, texts = inputs.features, inputs.texts
    ys = {k: {a.name: y[a.name][v] for a in axes} for k, v in data.parts.items()}
    experts = TextExperts.fit(axes, [texts[i] for i in tr], ys["train"], seed=cfg.seed, show_progress=True)
    cal_h, val_h = [], []
    for m in range(args.heads):
        t0 = time.perf_counter()
        head, log = train_head(axes, feats.take(tr), ys["train"], feats.take(ca), ys["calibration"],
                               replace(cfg.head, seed=cfg.head.seed + m), device, False)
        cal_h.append(head_logits(head, feats.take(ca), device))
        val_h.append(head_logits(head, feats.take(va), device))
        print(f"head {m}: {log['epochs_run']} epochs, {time.perf_counter() - t0:.0f} s", flush=True)
    experts.fit_weights(axes, cal_h[0], experts.scores([texts[i] for i in ca]), ys["calibration"])
    off = experts.offsets(texts)
    names = [a.name for a in axes if a.kind == "single"]
    print("\naccuracy / NLL / oracle coverage at .98, validation part\n")
    print("| heads | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for served in (False, True):
        plus = " + experts" if served else ""

        def add(lg: dict, idx: np.ndarray, served: bool = served) -> dict:
            return {n: v + off[n][idx] for n, v in lg.items()} if served else lg

        for m in range(args.heads):
            print(row(f"seed {m} alone{plus}", axes, add(cal_h[m], ca), add(val_h[m], va),
                      ys["calibration"], ys["validation"]))
        for k in range(2, args.heads + 1):
            mean_c = {n: np.mean([c[n] for c in cal_h[:k]], 0) for n in cal_h[0]}
            mean_v = {n: np.mean([v[n] for v in val_h[:k]], 0) for n in val_h[0]}
            print(row(f"mean of {k}{plus}", axes, add(mean_c, ca), add(mean_v, va),
                      ys["calibration"], ys["validation"]))


if __name__ == "__main__":
    main()
