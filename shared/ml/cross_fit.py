"""Cross-fitting: out-of-fold scores for calibration over the training and calibration parts.

One 10% calibration part leaves a value a few dozen predictions, far fewer than a lower bound of
.98 precision needs (149 right out of 149 at 95%). Here the pool (train + calibration) is cut into
K folds, whole duplicate groups per fold; each fold is scored by a model that never saw it, and
temperatures and thresholds are fitted on all of those scores.

Everything that learns from labels is redone per fold: the LoRA text adapter as well as the head.
The served encoder's adapter is tuned on the train part, so its features of train items are
in-sample; scores built on them would be optimistic, which is the one thing a guarantee cannot
afford. A fold's head stops early on a grouped slice of its own training folds (the same share
as the calibration part has of the pool), not on the fold it scores: choosing the epoch on the
scored fold would select on the very data the bound is computed from.

The served head stays the one trained on the train part; the fold models stand in for it, each
trained on a little less data, so their scores err on the cautious side.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from shared.ml.head_training import Features, HeadTrainConfig, train_head
from shared.ml.labels import Axis
from shared.ml.split import grouped_folds, grouped_split

BATCH = 4096  # items per scoring pass


def head_logits(head, f: Features, device: torch.device) -> dict[str, np.ndarray]:
    """Raw logits per axis for every item of ``f`` (in batches: a fold may be large), with the
    text experts' offsets added where ``f`` has them (shared.ml.experts)."""
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for s in range(0, len(f.text), BATCH):
            out = head(*f.tensors(np.arange(s, min(s + BATCH, len(f.text))), device))
            for name, lg in out.items():
                parts.setdefault(name, []).append(lg.float().cpu().numpy())
    logits = {name: np.concatenate(v) for name, v in parts.items()}
    for name, off in (f.offsets or {}).items():
        logits[name] = logits[name] + off
    return logits


def cross_fit_logits(
    axes: list[Axis], pool: np.ndarray, groups: np.ndarray, y: dict[str, np.ndarray],
    features_for: Callable[[np.ndarray], Features], k: int, stop_share: float,
    head_cfg: HeadTrainConfig, device: torch.device, seed: int = 0, show_progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict]:
    """Out-of-fold logits per axis, row-aligned with ``pool`` (indices into the records).

    ``features_for(fit_idx)`` returns every record's features as seen by a model whose
    label-trained parts learnt from ``fit_idx`` only. ``y`` and ``groups`` cover all records.
    Returns the logits and a log (fold sizes, epochs, seconds).
    """
    fold = grouped_folds(groups[pool], k, seed)
    out = {a.name: np.zeros((len(pool), len(a.values)), dtype=np.float32) for a in axes}
    log = []
    for f in range(k):
        t0 = time.perf_counter()
        held, rest = pool[fold == f], pool[fold != f]
        inner = grouped_split(groups[rest], {"fit": 1 - stop_share, "stop": stop_share},
                              seed=seed + 1 + f)
        fit, stop = rest[inner["fit"]], rest[inner["stop"]]
        feats = features_for(fit)  # as served: adapter and head learn from one part
        head, head_log = train_head(
            axes, feats.take(fit), {a.name: y[a.name][fit] for a in axes},
            feats.take(stop), {a.name: y[a.name][stop] for a in axes},
            head_cfg, device, show_progress)
        logits = head_logits(head, feats.take(held), device)
        for a in axes:
            out[a.name][fold == f] = logits[a.name]
        log.append({"fold": f, "scored": int(len(held)), "fit": int(len(fit)),
                    "stop": int(len(stop)), "epochs_run": head_log["epochs_run"],
                    "seconds": round(time.perf_counter() - t0, 1)})
    return out, {"folds": log}
