"""Fine-tuning the image backbone's tail on the label axes (issue 12, point 5), cheaply on a CPU.

Only the last block(s) of the backbone, its 1x1 head conv and that conv's norm learn (the *tail*;
``blocks[6]`` + ``conv_head`` + ``bn2`` of EfficientNet-Lite0 by default, about 1 M weights). The
frozen part's output maps (192x7x7 at 224 px) are computed once per photo, plus a horizontally
flipped view of every photo a tail may train on, and kept in memory (float32: the features a
tuned tail computes from them are the served encoder's to the last bits); each tuning then
runs only the tail and a temporary linear classifier per axis over those maps, so a tail for the
served model and one per cross-fitted calibration fold cost a few tail passes each, not backbone
passes. Batch norms keep their pretrained statistics (the tail runs in eval mode while it learns),
so what trained is exactly what the served encoder computes with the tuned tensors loaded.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from shared.config import Settings
from shared.ml.device import autocast
from shared.ml.image_encoder import ImageEncoder
from shared.ml.labels import Axis
from shared.ml.progress import progress
from shared.ml.train_config import TrainConfig

BATCH = 64  # maps per optimiser step
EVAL_BATCH = 256  # maps per forward when computing features


def tail_prefixes(model: nn.Module, blocks: int) -> tuple[str, ...]:
    """State-dict name prefixes of a timm EfficientNet's tail: its last ``blocks`` stages, the head
    conv and its norm."""
    n = len(model.blocks)
    return (*(f"blocks.{i}." for i in range(n - blocks, n)), "conv_head.", "bn2.")


class Tail(nn.Module):
    """A copy of the backbone's tail: frozen maps in, the pooled feature (backbone_dim) out."""

    def __init__(self, model: nn.Module, blocks: int) -> None:
        super().__init__()
        n = len(model.blocks)
        self.first = n - blocks
        self.blocks = nn.ModuleList(copy.deepcopy(model.blocks[i]) for i in range(self.first, n))
        self.conv_head = copy.deepcopy(model.conv_head)
        self.bn2 = copy.deepcopy(model.bn2)
        self.pool = copy.deepcopy(model.global_pool)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = maps
        for b in self.blocks:
            x = b(x)
        return self.pool(self.bn2(self.conv_head(x)))

    def state(self) -> dict[str, torch.Tensor]:
        """The tuned tensors under the backbone's own state-dict names (what the artifact stores
        and :func:`shared.ml.image_encoder.load_tail` loads), float32 on the CPU."""
        out: dict[str, torch.Tensor] = {}
        for k, b in enumerate(self.blocks):
            for name, t in b.state_dict().items():
                out[f"blocks.{self.first + k}.{name}"] = t.detach().cpu().clone()
        for prefix, m in (("conv_head", self.conv_head), ("bn2", self.bn2)):
            for name, t in m.state_dict().items():
                out[f"{prefix}.{name}"] = t.detach().cpu().clone()
        return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}


@dataclass
class FrozenMaps:
    """The frozen part's output for every record's photo (``row[i]``: its row in ``maps``, -1 for
    none) and for the flipped view of some (``flip_row``). float32 on the CPU: 37 KB a view."""

    maps: torch.Tensor
    row: np.ndarray
    flip: torch.Tensor
    flip_row: np.ndarray
    blocks: int


def _stem(model: nn.Module, first_tail_block: int, x: torch.Tensor) -> torch.Tensor:
    x = model.bn1(model.conv_stem(x))
    for i in range(first_tail_block):
        x = model.blocks[i](x)
    return x


@torch.inference_mode()
def frozen_maps(
    encoder: ImageEncoder, blobs: list[bytes | None], image_mask: np.ndarray, flipped: np.ndarray,
    blocks: int = 1, show_progress: bool = False,
) -> FrozenMaps:
    """Decode every photo once and run the backbone up to its tail; photos of records in
    ``flipped`` (bool per record: those a tail may train on) also mirrored. ``image_mask``: the
    records whose photo decoded (their features are non-zero); a photo that decodes here but was
    masked there is not used either, so both views agree."""
    model = encoder.model
    first = len(model.blocks) - blocks
    todo = np.nonzero(image_mask)[0]
    row = np.full(len(blobs), -1, dtype=np.int64)
    flip_row = np.full(len(blobs), -1, dtype=np.int64)
    maps: list[torch.Tensor] = []
    flips: list[torch.Tensor] = []
    n_maps = n_flips = 0
    views = len(todo) + int(flipped[todo].sum())
    with progress(views, "image tail: frozen maps", show_progress, unit="view") as bar:
        for s in range(0, len(todo), encoder.batch_size):
            idx = todo[s:s + encoder.batch_size]
            prepared = encoder.prepare_batch([blobs[i] for i in idx])
            if prepared.pixels is None:
                continue
            ok = idx[prepared.ok]
            x = prepared.pixels.to(encoder.device).contiguous(memory_format=torch.channels_last)
            with autocast(encoder.device):
                out = _stem(model, first, x)
            maps.append(out.float().cpu().contiguous())
            row[ok] = np.arange(n_maps, n_maps + len(ok))
            n_maps += len(ok)
            sel = np.nonzero(flipped[ok])[0]
            if len(sel):
                with autocast(encoder.device):
                    out = _stem(model, first, x[torch.from_numpy(sel).to(x.device)].flip(-1))
                flips.append(out.float().cpu().contiguous())
                flip_row[ok[sel]] = np.arange(n_flips, n_flips + len(sel))
                n_flips += len(sel)
            bar.update(len(ok) + len(sel))
    empty = torch.zeros((0,), dtype=torch.float32)
    return FrozenMaps(torch.cat(maps) if maps else empty, row, torch.cat(flips) if flips else empty,
                      flip_row, blocks)


def _axis_loss(a: Axis, logits: torch.Tensor, y: np.ndarray, device: torch.device) -> torch.Tensor | None:
    """Cross-entropy (single-label) or mean binary cross-entropy (multi-label) over the labelled rows."""
    if a.kind == "single":
        keep = np.nonzero(y >= 0)[0]
        if not len(keep):
            return None
        target = torch.from_numpy(y[keep]).to(device)
        return nn.functional.cross_entropy(logits[torch.from_numpy(keep).to(device)], target)
    keep = np.nonzero((y >= 0).all(axis=1))[0]
    if not len(keep):
        return None
    target = torch.from_numpy(y[keep].astype(np.float32)).to(device)
    return nn.functional.binary_cross_entropy_with_logits(logits[torch.from_numpy(keep).to(device)], target)


def tune_tail(
    encoder: ImageEncoder, fm: FrozenMaps, fit: np.ndarray, y: dict[str, np.ndarray], axes: list[Axis],
    epochs: int, lr: float = 3e-4, seed: int = 0, show_progress: bool = False, desc: str = "tune image tail",
) -> tuple[Tail, dict]:
    """A tail tuned on the records ``fit`` (those with a photo) against every axis's labels (the sum
    of the axes' cross-entropies, one temporary linear classifier per axis); each step reads each
    photo's original or flipped view at random. Returns the tail and a log (loss per epoch)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = encoder.device
    tail = Tail(encoder.model, fm.blocks).to(device).float().eval()  # eval: batch norms keep their stats
    for p in tail.parameters():
        p.requires_grad_(True)
    dim = encoder.backbone_dim
    probes = nn.ModuleDict({a.name: nn.Sequential(nn.Dropout(0.2), nn.Linear(dim, len(a.values)))
                            for a in axes}).to(device)
    items = np.array([i for i in fit if fm.row[i] >= 0], dtype=np.int64)
    log: dict = {"items": int(len(items)), "epochs": epochs, "lr": lr, "loss": []}
    if not len(items) or epochs < 1:
        return tail, log
    opt = torch.optim.AdamW([{"params": tail.parameters(), "lr": lr},
                             {"params": probes.parameters(), "lr": lr * 10}], weight_decay=0.01)
    steps = epochs * ((len(items) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, lr * 10], total_steps=steps, pct_start=0.1)
    probes.train()
    t0 = time.perf_counter()
    with progress(steps, desc, show_progress, unit="step") as bar:
        for _ in range(epochs):
            order = items[rng.permutation(len(items))]
            total, n = 0.0, 0
            for s in range(0, len(order), BATCH):
                idx = order[s:s + BATCH]
                use_flip = (fm.flip_row[idx] >= 0) & (rng.random(len(idx)) < 0.5)
                x = fm.maps[torch.from_numpy(fm.row[idx])]
                if use_flip.any():
                    x[torch.from_numpy(use_flip)] = fm.flip[torch.from_numpy(fm.flip_row[idx[use_flip]])]
                x = x.to(device)
                z = tail(x.contiguous(memory_format=torch.channels_last))
                loss = torch.zeros((), device=device)
                for a in axes:
                    part = _axis_loss(a, probes[a.name](z), y[a.name][idx], device)
                    if part is not None:
                        loss = loss + part
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step_loss = loss.item()  # a plain number: no autograd warning, one device sync
                total, n = total + step_loss * len(idx), n + len(idx)
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.3f}")
            log["loss"].append(round(total / max(n, 1), 4))
    for p in tail.parameters():
        p.requires_grad_(False)
    log["seconds"] = round(time.perf_counter() - t0, 1)
    return tail, log


@torch.inference_mode()
def tail_features(tail: Tail, fm: FrozenMaps, records: np.ndarray, device: torch.device) -> np.ndarray:
    """(len(records), backbone_dim) pooled features of ``records``' original photos through ``tail``
    (zero rows for records without one)."""
    out = np.zeros((len(records), tail.conv_head.out_channels), dtype=np.float32)
    have = np.nonzero(fm.row[records] >= 0)[0]
    tail.eval()
    for s in range(0, len(have), EVAL_BATCH):
        k = have[s:s + EVAL_BATCH]
        x = fm.maps[torch.from_numpy(fm.row[records[k]])].to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out[k] = tail(x).float().cpu().numpy()
    return out


def tuned_image(image: np.ndarray, tail: Tail, fm: FrozenMaps, records: np.ndarray,
                device: torch.device) -> np.ndarray:
    """``image`` features (backbone part ‖ colour) with the backbone part of ``records`` recomputed
    through ``tail``; the colour features and every other row stay as they are."""
    out = image.copy()
    dim = tail.conv_head.out_channels
    have = records[fm.row[records] >= 0]
    out[have, :dim] = tail_features(tail, fm, have, device)
    return out


def tail_for_training(
    encoder: ImageEncoder, blobs: list[bytes | None], image: np.ndarray, image_mask: np.ndarray,
    parts: dict[str, np.ndarray], y: dict[str, np.ndarray], axes: list[Axis], cfg: TrainConfig,
    settings: Settings, show_progress: bool,
) -> tuple[np.ndarray, FrozenMaps, ImageEncoder, dict[str, torch.Tensor], dict, dict[str, float]]:
    """The served model's tail: the frozen maps once (flipped too for the train and calibration
    parts' photos, which fold tails train on), a tail tuned on the train part, and every record's
    image features through it. Returns those features, the maps (for the folds), the served encoder
    (the tail loaded: its id names it), the tail's tensors, its manifest entry, and timings."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    pool = np.zeros(len(blobs), dtype=bool)
    pool[np.concatenate([parts["train"], parts["calibration"]])] = True
    maps = frozen_maps(encoder, blobs, image_mask, pool, cfg.image_tail_blocks, show_progress)
    timings["image_maps_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tail, log = tune_tail(encoder, maps, parts["train"], y, axes, cfg.image_tail_epochs,
                          cfg.image_tail_lr, cfg.seed, show_progress)
    image = tuned_image(image, tail, maps, np.arange(len(blobs)), encoder.device)
    state = tail.state()
    served = ImageEncoder.from_settings(settings, tail=state)
    doc = {"blocks": cfg.image_tail_blocks, "digest": served.tail_digest, "tensors": len(state),
           "training": log}
    timings["image_tail_s"] = time.perf_counter() - t0
    return image, maps, served, state, doc, timings


def fold_image(
    pretrained: ImageEncoder, maps: FrozenMaps, fit: np.ndarray, pool: np.ndarray, image: np.ndarray,
    y: dict[str, np.ndarray], axes: list[Axis], cfg: TrainConfig, show_progress: bool, logs: list[dict],
) -> np.ndarray:
    """A calibration fold's image features: a tail tuned from the pretrained one on ``fit`` alone
    (never the served tail: it learnt from the folds it would score), applied to the ``pool``'s
    photos; its training log is appended to ``logs``."""
    tail, log = tune_tail(pretrained, maps, fit, y, axes, cfg.image_tail_epochs, cfg.image_tail_lr,
                          cfg.seed, show_progress, desc=f"tune image tail (fold {len(logs) + 1})")
    logs.append(log)
    return tuned_image(image, tail, maps, pool, pretrained.device)
