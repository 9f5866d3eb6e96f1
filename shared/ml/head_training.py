"""Training the fusion head on cached features: modality dropout, class weights, early stopping."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from shared.ml.head import FusionHead, HeadConfig, HeadEnsemble
from shared.ml.labels import Axis
from shared.ml.lexical import document_frequency
from shared.ml.progress import progress


@dataclass
class Features:
    """Model inputs for a set of items (row-aligned). ``lex_ids``/``lex_counts``: the texts'
    hashed character n-grams (shared.ml.lexical), only for a head with the lexical channel.
    ``offsets``: per axis, what the text experts add to the head's logits (shared.ml.experts),
    only for a model with them; not a head input (the head trains without them)."""

    text: np.ndarray
    text_mask: np.ndarray
    image: np.ndarray
    image_mask: np.ndarray
    lex_ids: np.ndarray | None = None
    lex_counts: np.ndarray | None = None
    offsets: dict[str, np.ndarray] | None = None

    def _arrays(self) -> tuple[np.ndarray, ...]:
        base = (self.text, self.text_mask, self.image, self.image_mask)
        return base if self.lex_ids is None else (*base, self.lex_ids, self.lex_counts)

    def take(self, idx: np.ndarray) -> Features:
        offsets = None if self.offsets is None else {k: v[idx] for k, v in self.offsets.items()}
        return Features(*(a[idx] for a in self._arrays()), offsets=offsets)

    def only(self, modality: str) -> Features:
        """The same items as the model sees them with one modality missing (the title's n-grams
        are the title: without it they are missing too)."""
        if modality == "text":
            return replace(self, image_mask=np.zeros_like(self.image_mask))
        if modality == "image":
            return replace(self, text_mask=np.zeros_like(self.text_mask), offsets=None,
                           lex_counts=None if self.lex_counts is None else np.zeros_like(self.lex_counts))
        return self

    def tensors(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The head's positional inputs: (text, text_mask, image, image_mask[, lex_ids, lex_counts])."""
        return tuple(torch.from_numpy(a[idx]).to(device) for a in self._arrays())


@dataclass
class HeadTrainConfig:
    hidden: int = 512
    fusion: str = "gated"
    dropout: float = 0.2
    epochs: int = 40
    patience: int = 6
    # Small catalogues: at least this many optimiser steps (epochs and patience scale up, at most
    # 10x). 40 epochs of 1,700 items are 280 steps, far too few for a 200-value multi-label axis
    # (product1m-zh-dev: products micro-F1 .486 at 40 epochs, .82 at ~200; docs/MODEL.md). 0: off.
    min_steps: int = 0
    # Early stopping on the sum of each axis's validation loss relative to its first epoch, so an
    # axis that learns slowly (many rare values) weighs as much as one that is learnt at once.
    relative_stop: bool = False
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    modality_dropout: float = 0.25  # per item, drop text or image (never both) with this chance
    class_weight_power: float = 0.3  # weight = count^-power: tempers imbalance, keeps accuracy
    label_smoothing: float = 0.05
    seed: int = 0
    # The lexical channel (shared.ml.lexical): hashed n-gram buckets (0: off) and their width.
    # Training needs Features with lex_ids/lex_counts when it is on.
    lexical_buckets: int = 0
    lexical_dim: int = 32
    # Heads trained (seeds seed, seed + 1, …) and averaged: shared.ml.head.HeadEnsemble. 1: one.
    members: int = 1


def _class_weights(axis: Axis, y: np.ndarray, power: float) -> torch.Tensor | None:
    if axis.kind != "single" or power == 0:
        return None
    counts = np.bincount(y[y >= 0], minlength=len(axis.values)).astype(np.float64)
    w = (counts + 1.0) ** -power
    w *= (counts.sum()) / max((w * counts).sum(), 1e-9)  # mean weight per item stays 1
    return torch.tensor(w, dtype=torch.float32)


def _loss(axes, logits, ys, weights, smoothing):
    return sum(_axis_losses(axes, logits, ys, weights, smoothing).values(), 0.0)


def _axis_losses(axes, logits, ys, weights, smoothing) -> dict:
    total = {}
    for a in axes:
        y = ys[a.name]
        lg = logits[a.name]
        if a.kind == "single":
            keep = y >= 0
            if keep.any():
                total[a.name] = nn.functional.cross_entropy(
                    lg[keep], y[keep], weight=weights[a.name], label_smoothing=smoothing)
        else:
            keep = (y >= 0).all(-1)
            if keep.any():
                total[a.name] = nn.functional.binary_cross_entropy_with_logits(lg[keep], y[keep])
    return total


def _targets_tensor(axes, y: dict[str, np.ndarray], idx: np.ndarray, device) -> dict:
    out = {}
    for a in axes:
        v = y[a.name][idx]
        if a.kind == "single":
            v = np.where(v < 0, -1, v)  # unknown values (-2) are unusable as targets
        out[a.name] = torch.from_numpy(v).to(device)
    return out


def _dropped(inputs: tuple[torch.Tensor, ...], rng: np.random.Generator, p: float,
             device: torch.device) -> tuple[torch.Tensor, ...]:
    """Modality dropout: with chance ``p`` an item with a title and a photo loses one of them
    (half each). With the lexical channel, the title is its embedding and its n-grams together
    (both go), and, independently, with chance ``p`` an item with both title views loses one of
    them (half each), so neither view can carry the head alone."""
    t, tm, im, imm = inputs[:4]
    both = tm & imm
    r = torch.from_numpy(rng.random(len(t))).to(device)
    drop_title = both & (r < p / 2)
    tm = tm & ~drop_title
    imm = imm & ~(both & (r >= p / 2) & (r < p))
    if len(inputs) == 4:
        return t, tm, im, imm
    ids, counts = inputs[4:]
    r2 = torch.from_numpy(rng.random(len(t))).to(device)
    has_lex = (counts > 0).any(-1)
    views = tm & has_lex
    lex_off = drop_title | (views & (r2 >= p / 2) & (r2 < p))
    tm = tm & ~(views & (r2 < p / 2))
    return t, tm, im, imm, ids, counts * (~lex_off).float().unsqueeze(-1)


def scaled_schedule(cfg: HeadTrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """Epochs and patience for a training part of ``steps_per_epoch`` batches: ``cfg``'s, scaled
    up (at most 10x) until ``cfg.min_steps`` optimiser steps fit."""
    if cfg.min_steps <= 0 or steps_per_epoch * cfg.epochs >= cfg.min_steps:
        return cfg.epochs, cfg.patience
    epochs = min(10 * cfg.epochs, -(-cfg.min_steps // max(1, steps_per_epoch)))
    return epochs, max(cfg.patience, round(cfg.patience * epochs / cfg.epochs))


def train_head(
    axes: list[Axis],
    train: Features, y_train: dict[str, np.ndarray],
    val: Features, y_val: dict[str, np.ndarray],
    cfg: HeadTrainConfig, device: torch.device, show_progress: bool = True,
) -> tuple[FusionHead | HeadEnsemble, dict]:
    """Fit a head (or ``cfg.members`` of them, averaged); returns the best-on-validation weights
    and a small training log (each member's, for an ensemble)."""
    if cfg.members <= 1:
        return _train_one(axes, train, y_train, val, y_val, cfg, device, show_progress)
    trained = [_train_one(axes, train, y_train, val, y_val, replace(cfg, seed=cfg.seed + m),
                          device, show_progress) for m in range(cfg.members)]
    head = HeadEnsemble(replace(trained[0][0].cfg, members=cfg.members), [one for one, _ in trained])
    logs = [log for _, log in trained]
    return head.eval(), {"epochs_run": sum(log["epochs_run"] for log in logs), "members": logs}


def _train_one(
    axes: list[Axis],
    train: Features, y_train: dict[str, np.ndarray],
    val: Features, y_val: dict[str, np.ndarray],
    cfg: HeadTrainConfig, device: torch.device, show_progress: bool = True,
) -> tuple[FusionHead, dict]:
    """Fit one head; returns the best-on-validation weights and a small training log."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = FusionHead(HeadConfig(
        text_dim=train.text.shape[1], image_dim=train.image.shape[1],
        outputs={a.name: len(a.values) for a in axes}, hidden=cfg.hidden, fusion=cfg.fusion,
        dropout=cfg.dropout, axis_order=[a.name for a in axes],
        lexical_buckets=cfg.lexical_buckets, lexical_dim=cfg.lexical_dim,
    ))
    with_img = train.image[train.image_mask]
    if len(with_img):
        head.set_image_stats(torch.from_numpy(with_img.mean(0)), torch.from_numpy(with_img.std(0)))
    if cfg.lexical_buckets:
        if train.lex_ids is None:
            raise ValueError("lexical_buckets is set but the features have no hashed n-grams")
        df = document_frequency(train.lex_ids, train.lex_counts, cfg.lexical_buckets)
        head.set_lexical_idf(torch.from_numpy(df), len(train.text))
    head.to(device)
    weights = {a.name: (w.to(device) if (w := _class_weights(a, y_train[a.name],
                                                            cfg.class_weight_power)) is not None
                        else None) for a in axes}
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(train.text)
    per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    epochs, patience = scaled_schedule(cfg, per_epoch)
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps,
                                                pct_start=0.05)
    best, best_loss, bad, log = None, float("inf"), 0, []
    first: dict[str, float] | None = None
    all_val = np.arange(len(val.text))
    yv = _targets_tensor(axes, y_val, all_val, device)
    bar = progress(epochs, f"train head ({cfg.fusion})", show_progress, unit="epoch")
    for epoch in range(epochs):
        head.train()
        order = rng.permutation(n)
        for s in range(0, n, cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            inputs = _dropped(train.tensors(idx, device), rng, cfg.modality_dropout, device)
            loss = _loss(axes, head(*inputs), _targets_tensor(axes, y_train, idx, device),
                         weights, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        head.eval()
        with torch.no_grad():
            per = {k: float(v) for k, v in _axis_losses(axes, head(*val.tensors(all_val, device)), yv,
                                                        weights, 0.0).items()}
        if cfg.relative_stop:
            first = first or per
            vl = sum(v / max(first[k], 1e-9) for k, v in per.items())
        else:
            vl = sum(per.values())
        log.append({"epoch": epoch + 1, "val_loss": round(vl, 4)})
        bar.set_postfix(val_loss=f"{vl:.4f}")
        bar.update(1)
        if vl < best_loss - 1e-4:
            best_loss, best, bad = vl, copy.deepcopy(head.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
    bar.close()
    head.load_state_dict(best)
    head.round_lexical()  # the artifact stores its tables in float16: serve what is evaluated
    return head.eval(), {"epochs_run": len(log), "best_val_loss": round(best_loss, 4), "log": log}
