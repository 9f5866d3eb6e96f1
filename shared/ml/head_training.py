"""Training the fusion head on cached features: modality dropout, class weights, early stopping."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from shared.ml.head import FusionHead, HeadConfig
from shared.ml.labels import Axis
from shared.ml.progress import progress


@dataclass
class Features:
    """Model inputs for a set of items (row-aligned)."""

    text: np.ndarray
    text_mask: np.ndarray
    image: np.ndarray
    image_mask: np.ndarray

    def take(self, idx: np.ndarray) -> Features:
        return Features(self.text[idx], self.text_mask[idx], self.image[idx], self.image_mask[idx])

    def only(self, modality: str) -> Features:
        """The same items as the model sees them with one modality missing."""
        if modality == "text":
            return Features(self.text, self.text_mask, self.image, np.zeros_like(self.image_mask))
        if modality == "image":
            return Features(self.text, np.zeros_like(self.text_mask), self.image, self.image_mask)
        return self

    def tensors(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a[idx]).to(device) for a in
                     (self.text, self.text_mask, self.image, self.image_mask))


@dataclass
class HeadTrainConfig:
    hidden: int = 512
    fusion: str = "gated"
    dropout: float = 0.2
    epochs: int = 40
    patience: int = 6
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    modality_dropout: float = 0.25  # per item, drop text or image (never both) with this chance
    class_weight_power: float = 0.3  # weight = count^-power: tempers imbalance, keeps accuracy
    label_smoothing: float = 0.05
    seed: int = 0


def _class_weights(axis: Axis, y: np.ndarray, power: float) -> torch.Tensor | None:
    if axis.kind != "single" or power == 0:
        return None
    counts = np.bincount(y[y >= 0], minlength=len(axis.values)).astype(np.float64)
    w = (counts + 1.0) ** -power
    w *= (counts.sum()) / max((w * counts).sum(), 1e-9)  # mean weight per item stays 1
    return torch.tensor(w, dtype=torch.float32)


def _loss(axes, logits, ys, weights, smoothing):
    total = 0.0
    for a in axes:
        y = ys[a.name]
        lg = logits[a.name]
        if a.kind == "single":
            keep = y >= 0
            if keep.any():
                total = total + nn.functional.cross_entropy(
                    lg[keep], y[keep], weight=weights[a.name], label_smoothing=smoothing)
        else:
            keep = (y >= 0).all(-1)
            if keep.any():
                total = total + nn.functional.binary_cross_entropy_with_logits(lg[keep], y[keep])
    return total


def _targets_tensor(axes, y: dict[str, np.ndarray], idx: np.ndarray, device) -> dict:
    out = {}
    for a in axes:
        v = y[a.name][idx]
        if a.kind == "single":
            v = np.where(v < 0, -1, v)  # unknown values (-2) are unusable as targets
        out[a.name] = torch.from_numpy(v).to(device)
    return out


def train_head(
    axes: list[Axis],
    train: Features, y_train: dict[str, np.ndarray],
    val: Features, y_val: dict[str, np.ndarray],
    cfg: HeadTrainConfig, device: torch.device, show_progress: bool = True,
) -> tuple[FusionHead, dict]:
    """Fit a head; returns the best-on-validation weights and a small training log."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = FusionHead(HeadConfig(
        text_dim=train.text.shape[1], image_dim=train.image.shape[1],
        outputs={a.name: len(a.values) for a in axes}, hidden=cfg.hidden, fusion=cfg.fusion,
        dropout=cfg.dropout, axis_order=[a.name for a in axes],
    ))
    with_img = train.image[train.image_mask]
    if len(with_img):
        head.set_image_stats(torch.from_numpy(with_img.mean(0)), torch.from_numpy(with_img.std(0)))
    head.to(device)
    weights = {a.name: (w.to(device) if (w := _class_weights(a, y_train[a.name],
                                                            cfg.class_weight_power)) is not None
                        else None) for a in axes}
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(train.text)
    steps = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps,
                                                pct_start=0.05)
    best, best_loss, bad, log = None, float("inf"), 0, []
    all_val = np.arange(len(val.text))
    yv = _targets_tensor(axes, y_val, all_val, device)
    bar = progress(cfg.epochs, f"train head ({cfg.fusion})", show_progress, unit="epoch")
    for epoch in range(cfg.epochs):
        head.train()
        order = rng.permutation(n)
        for s in range(0, n, cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            t, tm, im, imm = train.tensors(idx, device)
            both = tm & imm
            r = torch.from_numpy(rng.random(len(idx))).to(device)
            tm = tm & ~(both & (r < cfg.modality_dropout / 2))
            imm = imm & ~(both & (r >= cfg.modality_dropout / 2) & (r < cfg.modality_dropout))
            loss = _loss(axes, head(t, tm, im, imm), _targets_tensor(axes, y_train, idx, device),
                         weights, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        head.eval()
        with torch.no_grad():
            vl = float(_loss(axes, head(*val.tensors(all_val, device)), yv, weights, 0.0))
        log.append({"epoch": epoch + 1, "val_loss": round(vl, 4)})
        bar.set_postfix(val_loss=f"{vl:.4f}")
        bar.update(1)
        if vl < best_loss - 1e-4:
            best_loss, best, bad = vl, copy.deepcopy(head.state_dict()), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    bar.close()
    head.load_state_dict(best)
    return head.eval(), {"epochs_run": len(log), "best_val_loss": round(best_loss, 4), "log": log}
