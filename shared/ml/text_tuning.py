"""LoRA fine-tuning of the text encoder on the label axes (a few epochs fit on two CPU cores).

Duplicated titles are trained once, with the label distribution of all their rows as a soft
target: the catalogue has many copies of one title with disagreeing labels, and a hard label
per copy would just teach the encoder to flip a coin.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from shared.config import Settings
from shared.ml.labels import Axis
from shared.ml.progress import progress
from shared.ml.text_encoder import TextEncoder, build_text_encoder
from shared.ml.text_encoder_use import UseTextEncoder
from shared.ml.train_config import LORA_TUNABLE, TrainConfig


def soft_targets(
    texts: list[str], y: dict[str, np.ndarray], axes: list[Axis]
) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Unique texts; per axis a (u, k) target distribution and a (u,) weight (0 = unlabelled)."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        if t.strip():
            rows[t.strip()].append(i)
    uniq = list(rows)
    dist, weight = {}, {}
    for a in axes:
        k = len(a.values)
        d = np.zeros((len(uniq), k), dtype=np.float32)
        for u, t in enumerate(uniq):
            for i in rows[t]:
                if a.kind == "single":
                    if y[a.name][i] >= 0:
                        d[u, y[a.name][i]] += 1
                elif (y[a.name][i] >= 0).all():
                    d[u] += y[a.name][i]
        cnt = d.sum(1) if a.kind == "single" else np.array(
            [sum((y[a.name][i] >= 0).all() for i in rows[t]) for t in uniq], dtype=np.float32)
        weight[a.name] = (cnt > 0).astype(np.float32)
        dist[a.name] = d / np.maximum(cnt, 1)[:, None]
    return uniq, dist, weight


def tune_text_encoder(
    encoder: TextEncoder,
    texts: list[str],
    y: dict[str, np.ndarray],
    axes: list[Axis],
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
    lora: dict | None = None,
    show_progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Attach LoRA adapters, train them with one linear probe per axis, merge them into the
    encoder and return the adapter tensors (what the artifact stores)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    uniq, dist, weight = soft_targets(texts, y, axes)
    encoder.attach_lora(lora or {}, trainable=True)
    probes = nn.ModuleDict({a.name: nn.Linear(encoder.dim, len(a.values)) for a in axes})
    probes.to(encoder.device)
    params = [p for p in encoder.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": params, "lr": lr}, {"params": probes.parameters(), "lr": lr * 5}],
        weight_decay=0.01,
    )
    steps = epochs * ((len(uniq) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[lr, lr * 5], total_steps=max(steps, 1), pct_start=0.1
    )
    encoder.model.train()
    bar = progress(steps, "tune text encoder (LoRA)", show_progress, unit="step")
    for _ in range(epochs):
        order = rng.permutation(len(uniq))
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = encoder.tokenize([uniq[i] for i in idx])
            z = encoder.forward(batch)
            loss = torch.zeros((), device=encoder.device)
            for a in axes:
                w = torch.from_numpy(weight[a.name][idx]).to(encoder.device)
                if w.sum() == 0:
                    continue
                target = torch.from_numpy(dist[a.name][idx]).to(encoder.device)
                logits = probes[a.name](z)
                if a.kind == "single":
                    per = -(target * logits.log_softmax(-1)).sum(-1)
                else:
                    per = nn.functional.binary_cross_entropy_with_logits(
                        logits, target, reduction="none").mean(-1)
                loss = loss + (per * w).sum() / w.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return encoder.finish_training()


def _adapter_cache_key(base_id: str, texts: list[str], y: dict, cfg: TrainConfig, axes) -> str:
    h = hashlib.sha256(base_id.encode())
    h.update(json.dumps([cfg.seed, cfg.text_epochs, cfg.text_lr, cfg.lora_r,
                         [(a.name, a.values) for a in axes]]).encode())
    for t in texts:
        h.update(t.encode())
    for a in axes:
        h.update(np.ascontiguousarray(y[a.name]).tobytes())
    return h.hexdigest()[:20]


def tuned_text_encoder(
    settings: Settings, texts: list[str], y: dict, axes: list[Axis], cfg: TrainConfig,
    show_progress: bool,
) -> tuple[TextEncoder | UseTextEncoder, dict[str, torch.Tensor] | None]:
    """The text encoder ``cfg.text_encoder`` (None: the settings'), LoRA-tuned on the training
    part if it can be; tuned adapters are cached by their inputs, so re-running the same training
    does not tune again."""
    kind = cfg.text_encoder or settings.text_encoder or "minilm"
    enc = build_text_encoder(kind, settings, include_base=cfg.text_include_base, windows=cfg.text_windows)
    if not cfg.finetune_text or kind not in LORA_TUNABLE:
        return enc, None
    lora = {"r": cfg.lora_r, "lora_alpha": 2 * cfg.lora_r}
    path = settings.cache_dir / "adapters" / (
        _adapter_cache_key(enc.base_id + enc.windows_id, texts, y, cfg, axes) + ".safetensors")
    if path.is_file():
        state = load_file(str(path))
        enc = build_text_encoder(kind, settings, adapter=state, lora=lora,
                                 include_base=cfg.text_include_base, windows=cfg.text_windows)
        return enc, state
    state = tune_text_encoder(enc, texts, y, axes, epochs=cfg.text_epochs, lr=cfg.text_lr,
                              seed=cfg.seed, lora=lora, show_progress=show_progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return enc, state
