"""A catalogue's inputs as training reads them: photos (with the tuned image tail when the config
trains one), title embeddings (LoRA-tuned when it says so) and the lexical channel's n-grams.

One home for the recipe, shared by ``tagger train`` (shared.ml.training) and the benches that
study its heads, so a bench never scores features training would not have made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from shared.config import Settings
from shared.ml.cache import EmbeddingCache
from shared.ml.dataset import Record
from shared.ml.features import image_features, text_features
from shared.ml.head_training import Features
from shared.ml.image_encoder import ImageEncoder
from shared.ml.image_tuning import FrozenMaps, tail_for_training
from shared.ml.labels import Axis
from shared.ml.lexical import hash_ngrams
from shared.ml.text_encoder import TextEncoder
from shared.ml.text_encoder_use import UseTextEncoder
from shared.ml.text_tuning import tuned_text_encoder
from shared.ml.train_config import TrainConfig


class Catalogue(Protocol):
    """What encoding reads of a split catalogue (shared.ml.training.Prepared has it)."""

    records: list[Record]
    blobs: list[bytes | None]
    parts: dict[str, np.ndarray]
    image_features: tuple[np.ndarray, np.ndarray] | None  # already encoded by the split, if so


@dataclass
class TrainingInputs:
    """A catalogue's inputs as every head trained on it reads them, and the encoders that made
    them (the served ones: the tuned image tail and LoRA adapter when the config trains them)."""

    features: Features
    texts: list[str]
    text_encoder: TextEncoder | UseTextEncoder
    adapter: dict[str, torch.Tensor] | None
    image_encoder: ImageEncoder
    pretrained: ImageEncoder  # the backbone before any tail tuning (fold tails start from it)
    maps: FrozenMaps | None  # the frozen part's maps when a tail was tuned (fold tails reuse them)
    tail_state: dict[str, torch.Tensor] | None
    tail_doc: dict | None
    timings: dict[str, float]


def encode_inputs(
    data: Catalogue, axes: list[Axis], y: dict[str, np.ndarray], cfg: TrainConfig, s: Settings,
    cache: EmbeddingCache, show_progress: bool = True,
) -> TrainingInputs:
    """Photos, then (optionally tuned) title embeddings, then the lexical channel's n-grams: the
    one recipe shared by ``tagger train`` and the benches that study its heads, so a bench never
    scores features training would not have made. ``cfg`` is the resolved config (choices made)."""
    timings: dict[str, float] = {}
    train_idx = data.parts["train"]
    t0 = time.perf_counter()
    image_enc = ImageEncoder.from_settings(s)
    ix, im = data.image_features or image_features(image_enc, data.blobs, cache, show_progress)
    timings["image_features_s"] = time.perf_counter() - t0
    maps, tail_state, tail_doc, pretrained = None, None, None, image_enc
    if cfg.image_tail_epochs and im[train_idx].any():  # the tuned image tail replaces the backbone's
        ix, maps, image_enc, tail_state, tail_doc, t = tail_for_training(
            image_enc, data.blobs, ix, im, data.parts, y, axes, cfg, s, show_progress)
        timings.update(t)

    t0 = time.perf_counter()
    texts = [r.text for r in data.records]
    text_enc, adapter = tuned_text_encoder(
        s, [texts[i] for i in train_idx], {a.name: y[a.name][train_idx] for a in axes}, axes, cfg,
        show_progress)
    timings["text_tuning_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tx, tm = text_features(text_enc, texts, cache, show_progress)
    timings["text_features_s"] = time.perf_counter() - t0

    feats = Features(tx, tm, ix, im)
    if cfg.head.lexical_buckets:  # the lexical channel: the texts' hashed n-grams (shared.ml.lexical)
        t0 = time.perf_counter()
        feats.lex_ids, feats.lex_counts = hash_ngrams(texts, cfg.head.lexical_buckets)
        timings["lexical_hashing_s"] = time.perf_counter() - t0
    return TrainingInputs(feats, texts, text_enc, adapter, image_enc, pretrained, maps, tail_state,
                          tail_doc, timings)
