"""``tagger train``: manifest in, calibrated model artifact and an honest report out."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from shared.config import Settings, get_settings
from shared.errors import ManifestError
from shared.ml.artifact import Artifact, save_artifact
from shared.ml.cache import EmbeddingCache
from shared.ml.calibration import check_served, fit_temperature, fit_thresholds, probabilities
from shared.ml.consistency import Consistency
from shared.ml.cross_fit import cross_fit_logits, head_logits
from shared.ml.dataset import AxisKind, Record, content_hash, load_blobs, load_manifest, load_records
from shared.ml.evaluation import evaluate_probs
from shared.ml.evidence import alone_axes, fit_trust, input_evidence, trusted_axes
from shared.ml.experts import TextExperts
from shared.ml.features import image_features, text_features
from shared.ml.head import FusionHead
from shared.ml.head_training import Features, train_head
from shared.ml.image_encoder import ImageEncoder
from shared.ml.image_tuning import FrozenMaps, fold_image
from shared.ml.labels import Axis, build_axes, targets
from shared.ml.manifest import ModelManifest
from shared.ml.novelty import NoveltyGuard, fit_guard
from shared.ml.split import duplicate_groups, group_near_duplicates, grouped_split
from shared.ml.text_encoder import TextEncoder, minilm_unknown_share
from shared.ml.text_encoder_use import UseTextEncoder
from shared.ml.text_tuning import tuned_text_encoder
from shared.ml.train_config import (
    LORA_TUNABLE,
    TrainConfig,
    calibration_gaps,
    config_problems,
    image_tail_epochs_choice,
    near_duplicate_choice,
    pool_thin_choice,
    rare_values,
    text_encoder_choice,
)
from shared.ml.training_inputs import encode_inputs

MODALITIES = ("text", "image", "both")


@dataclass
class Prepared:
    """Everything derived from the dataset before any model runs."""

    name: str
    records: list[Record]
    blobs: list[bytes | None]
    kinds: dict[str, AxisKind]
    parts: dict[str, np.ndarray]
    fingerprint: str
    missing_images: int
    groups: np.ndarray | None = None  # duplicate group per record (shared.ml.split)
    near_duplicates: dict | None = None  # what near-duplicate photo grouping joined (its log)
    text_encoder: str | None = None  # the dataset manifest's choice (shared.ml.train_config)
    # (features, mask) of the photos when splitting already encoded them (near-duplicate grouping)
    image_features: tuple[np.ndarray, np.ndarray] | None = None


def prepare_records(
    name: str, records: list[Record], blobs: list[bytes | None], kinds: dict[str, AxisKind],
    cfg: TrainConfig, holdout: set[str] | None = None, image_vectors: np.ndarray | None = None,
) -> Prepared:
    """Split grouped by duplicates. With ``holdout`` (a frozen evaluation set of record ids) the
    validation part is exactly those records, and every record sharing a duplicate group with
    one of them is left out of training too, so the evaluation set never leaks into training.

    ``image_vectors`` (rows of zeros: no photo) join near-duplicate photos into groups when
    ``cfg.near_duplicate_similarity`` is set; a holdout's photos join nothing (an official test
    split stays as published, and only exact copies of it are kept out of training)."""
    problems = config_problems(cfg, holdout is not None)
    if problems:
        raise ValueError("; ".join(f"{k}: {v}" for k, v in problems.items()))
    hashes = [content_hash(b) if b else None for b in blobs]
    groups = duplicate_groups([r.text for r in records], hashes)
    near, (sim, chosen_by) = None, near_duplicate_choice(cfg.near_duplicate_similarity, records, blobs)
    if sim > 0 and image_vectors is not None:
        usable = np.abs(image_vectors).sum(axis=1) > 0
        if holdout is not None:
            usable &= np.array([r.id not in holdout for r in records])
        groups, near = group_near_duplicates(groups, image_vectors, usable, sim)
        near["chosen_by"] = chosen_by
    if holdout is None:
        parts = grouped_split(
            groups,
            {"train": 1 - cfg.calibration_fraction - cfg.validation_fraction,
             "calibration": cfg.calibration_fraction, "validation": cfg.validation_fraction},
            seed=cfg.seed,
        )
    else:
        held = np.array([r.id in holdout for r in records])
        tainted = np.isin(groups, groups[held])
        rest = np.nonzero(~tainted)[0]
        inner = grouped_split(groups[rest], {"train": 1 - cfg.calibration_fraction,
                                             "calibration": cfg.calibration_fraction}, seed=cfg.seed)
        parts = {"train": rest[inner["train"]], "calibration": rest[inner["calibration"]],
                 "validation": np.nonzero(held)[0]}
    fp = hashlib.sha256()
    for r, h in zip(records, hashes, strict=True):
        fp.update(json.dumps([r.id, r.text, h, r.labels], sort_keys=True).encode())
    missing = sum(1 for r, b in zip(records, blobs, strict=True) if r.image_ref and b is None)
    return Prepared(name, records, blobs, kinds, parts, fp.hexdigest(), missing, groups, near)


def prepare(
    manifest_path: str | Path, cfg: TrainConfig, holdout: set[str] | None = None,
    settings: Settings | None = None, show_progress: bool = False,
) -> Prepared:
    """A manifest's records, split; ``holdout`` (record ids) fixes the validation part, e.g. a
    catalogue's official test split. Near-duplicate photo grouping encodes the photos first
    (through the embedding cache, so training reads them back for free)."""
    manifest = load_manifest(manifest_path)
    records = load_records(manifest)
    if holdout is not None:
        unknown = holdout - {r.id for r in records}
        if unknown or not holdout:
            raise ManifestError(f"holdout: {len(unknown)} of its {len(holdout)} ids are not in "
                                f"{manifest.table_path} (e.g. {sorted(unknown)[:3]})" if unknown
                                else "holdout: no ids")
    blobs = load_blobs(manifest, records)  # warns when photos it names are missing
    kinds = {name: spec.kind for name, spec in manifest.axes.items()}
    vectors, feats = None, None
    if any(blobs) and near_duplicate_choice(cfg.near_duplicate_similarity, records, blobs)[0] > 0:
        s = settings or get_settings()
        enc = ImageEncoder.from_settings(s)
        cache = EmbeddingCache(s.cache_dir / "embeddings.sqlite")
        try:
            feats = image_features(enc, blobs, cache, show_progress)
        finally:
            cache.close()
        vectors = feats[0][:, :enc.backbone_dim]  # what the photo shows, not its colour histogram
    data = prepare_records(manifest.name, records, blobs, kinds, cfg, holdout, vectors)
    data.text_encoder = manifest.text_encoder
    data.image_features = feats  # training uses them as they are: no second pass over the photos
    return data


def logits_to_probs(head: FusionHead, axes: list[Axis], f: Features, device) -> dict:
    """The served model's probabilities: the head's logits plus the text experts' offsets."""
    logits = head_logits(head, f, device)
    return {a.name: probabilities(a, logits[a.name]) for a in axes}


def calibration_scores(
    data: Prepared, axes: list[Axis], y: dict[str, np.ndarray], feats: Features,
    head: FusionHead, s: Settings, cfg: TrainConfig, device: torch.device, show_progress: bool,
    experts: TextExperts | None = None, image_enc: ImageEncoder | None = None,
    maps: FrozenMaps | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """The records to calibrate on, their logits per axis, and a log: out-of-fold over train +
    calibration (``cfg.calibration_folds`` grouped folds), else the served head's on the
    calibration part (folds <= 1, or too few duplicate groups to fold). With ``maps`` each fold
    tunes its own image tail from the pretrained ``image_enc`` (shared.ml.image_tuning)."""
    cal = data.parts["calibration"]
    pool = np.sort(np.concatenate([data.parts["train"], cal]))
    groups = data.groups
    if groups is None:
        groups = duplicate_groups([r.text for r in data.records],
                                  [content_hash(b) if b else None for b in data.blobs])
    k = min(cfg.calibration_folds, len(np.unique(groups[pool])) // 2)
    if k < 2:
        return cal, head_logits(head, feats.take(cal), device), {
            "method": "calibration part", "n": int(len(cal)), "confidence": cfg.confidence}
    texts = [r.text for r in data.records]
    in_pool = np.zeros(len(texts), dtype=bool)
    in_pool[pool] = True
    tail_logs: list[dict] = []

    def features_for(fit: np.ndarray) -> Features:
        """Features as seen by a model whose adapter, experts and image tail learnt from ``fit`` alone."""
        f = feats
        if maps is not None and image_enc is not None:  # the fold's own tail, for the pool's photos
            f = replace(f, image=fold_image(image_enc, maps, fit, pool, f.image, y, axes, cfg,
                                            show_progress, tail_logs))
        if cfg.finetune_text:
            enc, _ = tuned_text_encoder(s, [texts[i] for i in fit],
                                        {a.name: y[a.name][fit] for a in axes}, axes, cfg, show_progress)
            # Not cached: a fold's embeddings serve once, and would add a copy of the pool per fold.
            tx, tm = text_features(enc, [t if in_pool[i] else "" for i, t in enumerate(texts)], None,
                                   show_progress)
            f = replace(f, text=tx, text_mask=tm)  # the n-grams learn nothing until the head
        if experts is not None:  # the fold's own experts, with the served experts' weights
            fold = TextExperts.fit(axes, [texts[i] for i in fit], {a.name: y[a.name][fit] for a in axes},
                                   seed=cfg.seed, show_progress=show_progress)
            fold.weight = dict(experts.weight)
            f = replace(f, offsets=fold.offsets([t if in_pool[i] else "" for i, t in enumerate(texts)]))
        return f

    stop_share = len(cal) / len(pool) if len(cal) else 0.1
    logits, log = cross_fit_logits(axes, pool, groups, y, features_for, k, stop_share, cfg.head,
                                   device, cfg.seed, show_progress)
    return pool, logits, {"method": "cross-fit", "n": int(len(pool)), "k": k,
                          "confidence": cfg.confidence, **log,
                          **({"image_tails": tail_logs} if tail_logs else {})}


def _validation_report(head: FusionHead, axes: list[Axis], f: Features, y: dict[str, np.ndarray],
                       device: torch.device, guard: NoveltyGuard, consistency: Consistency,
                       texts: list[str], text_enc: TextEncoder | UseTextEncoder, modality: str,
                       disagreement: dict) -> dict:
    """The validation metrics of what the product would apply: abstaining out of domain and
    decoding auto tags jointly, as the predictor does (shared.ml.evaluation)."""
    if modality == "image":
        texts = [""] * len(texts)
    nov = guard.score(texts, f.text, f.text_mask, f.image, f.image_mask, text_enc.tokenizer)
    withheld = input_evidence(head, axes, f.text, f.text_mask, f.image, f.image_mask,
                              device, trusted_axes(disagreement), alone_axes(disagreement),
                              f.lex_ids, f.lex_counts).withheld()
    return evaluate_probs(axes, logits_to_probs(head, axes, f, device), y, consistency, axes,
                          nov.novel, withheld)


def train(
    manifest_path: str | Path, out_dir: str | Path, settings: Settings | None = None,
    cfg: TrainConfig | None = None, show_progress: bool = True, holdout: set[str] | None = None,
) -> dict:
    """Train, calibrate, evaluate and save a model; returns the report stored in its manifest."""
    data = prepare(manifest_path, cfg := cfg or TrainConfig(), holdout, settings, show_progress)
    return train_prepared(data, out_dir, settings, cfg, show_progress)


def train_prepared(
    data: Prepared, out_dir: str | Path, settings: Settings | None = None,
    cfg: TrainConfig | None = None, show_progress: bool = True, scores_out: Path | None = None,
) -> dict:
    """Train on already split data (a manifest's, or labels from the database). ``scores_out``:
    also write the calibration scores and the validation part's probabilities there (.npz), so a
    threshold rule can be studied without training again (bench/, never the artifact)."""
    s = settings or get_settings()
    cfg = cfg or TrainConfig()
    # The text encoder: the run's option, else the dataset manifest's, else the setting. One
    # without a LoRA path trains frozen (said in the report) rather than refusing the default.
    train_texts = [data.records[i].text for i in data.parts["train"]]
    kind, chosen_by = text_encoder_choice(cfg.text_encoder, data.text_encoder, s.text_encoder,
                                          lambda: minilm_unknown_share(s, train_texts))
    text_choice = {"kind": kind, "chosen_by": chosen_by}
    if cfg.finetune_text and kind not in LORA_TUNABLE:
        text_choice["note"] = f"{kind} cannot be LoRA-tuned: trained with the text encoder frozen"
    near = cfg.near_duplicate_similarity  # the manifest records what the split did
    pool_on, pool_chosen_by = pool_thin_choice(cfg.pool_thin_values, data.records, data.blobs)
    cfg = replace(cfg, text_encoder=kind, finetune_text=cfg.finetune_text and kind in LORA_TUNABLE,
                  near_duplicate_similarity=(data.near_duplicates or {}).get("similarity", 0.0)
                  if near is None else near,
                  image_tail_epochs=image_tail_epochs_choice(cfg.image_tail_epochs, data.records, data.blobs),
                  pool_thin_values=pool_on, pool_unproven=pool_on and cfg.pool_unproven)
    target = cfg.target_precision or s.target_precision
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    recs, train_idx = data.records, data.parts["train"]
    axes = build_axes([recs[i] for i in train_idx], data.kinds, min_count=cfg.min_value_count)
    y = {a.name: targets(recs, a) for a in axes}
    cache = EmbeddingCache(s.cache_dir / "embeddings.sqlite")
    inputs = encode_inputs(data, axes, y, cfg, s, cache, show_progress)
    timings = dict(inputs.timings)
    feats, texts, text_enc, adapter = inputs.features, inputs.texts, inputs.text_encoder, inputs.adapter
    image_enc, pretrained, maps = inputs.image_encoder, inputs.pretrained, inputs.maps
    tail_state, tail_doc = inputs.tail_state, inputs.tail_doc
    part = {k: feats.take(v) for k, v in data.parts.items()}
    ys = {k: {a.name: y[a.name][v] for a in axes} for k, v in data.parts.items()}
    t0 = time.perf_counter()
    device = text_enc.device
    head, head_log = train_head(axes, part["train"], ys["train"], part["calibration"],
                                ys["calibration"], cfg.head, device, show_progress)
    timings["head_training_s"] = time.perf_counter() - t0
    experts = None
    # The text experts: the baseline's regressions, added to the head's logits (shared.ml.experts).
    if cfg.text_experts and any(texts[i].strip() for i in train_idx):
        t0 = time.perf_counter()
        experts = TextExperts.fit(axes, [texts[i] for i in train_idx], ys["train"], seed=cfg.seed,
                                  show_progress=show_progress)
        experts.fit_weights(axes, head_logits(head, part["calibration"], device),
                            experts.scores([texts[i] for i in data.parts["calibration"]]), ys["calibration"])
        feats.offsets = experts.offsets(texts)
        part = {k: feats.take(v) for k, v in data.parts.items()}
        timings["text_experts_s"] = time.perf_counter() - t0

    # Calibrate: temperatures first, then thresholds with a precision lower bound (calibration).
    t0 = time.perf_counter()
    cal_idx, cal_logits, cal_log = calibration_scores(data, axes, y, feats, head, s, cfg, device,
                                                      show_progress, experts, pretrained, maps)
    for a in axes:
        lg, yc = cal_logits[a.name], y[a.name][cal_idx]
        a.temperature = fit_temperature(a, lg, yc)
        fit_thresholds(a, probabilities(a, lg), yc, target, cfg.confidence, cfg.pool_thin_values,
                       cfg.pool_unproven)
    cal_log["pool_thin_values"] = {"on": pool_on, "chosen_by": pool_chosen_by,
                                   "unproven": pool_on and cfg.pool_unproven}
    if cal_log["method"] == "cross-fit":  # the served head must keep what its fold heads proved
        served = logits_to_probs(head, axes, part["calibration"], device)
        cal_log["served_check"] = {a.name: c for a in axes if (c := check_served(
            a, served[a.name], ys["calibration"][a.name], target)) is not None}
    timings["calibration_s"] = time.perf_counter() - t0  # with cross-fitting's fold models

    # Novelty guard (shared.ml.novelty): items unlike the training data never get auto tags.
    guard = fit_guard(feats, data.parts, texts, text_enc.tokenizer, image_enc.backbone_dim, cfg.seed)
    # Consistent tags (shared.ml.consistency): contradicting value pairs, from every label the
    # model may learn from (train + calibration, never validation).
    seen = np.concatenate([data.parts["train"], data.parts["calibration"]])
    consistency = Consistency.fit(axes, {a.name: y[a.name][seen] for a in axes})
    # Which inputs' solo opinions count (shared.ml.evidence), on the calibration part.
    c = part["calibration"]
    disagreement = fit_trust(input_evidence(head, axes, c.text, c.text_mask, c.image, c.image_mask,
                                            device, lex_ids=c.lex_ids, lex_counts=c.lex_counts),
                             ys["calibration"], target, cfg.confidence)
    # A modality is reported only where the data has that input: a text-only catalogue gets no
    # image column. "both" (the served model) always is: live accuracy compares with it.
    inputs = {"text": int(feats.text_mask.sum()), "image": int(feats.image_mask.sum())}
    modalities = [m for m in MODALITIES if m == "both" or inputs[m]]
    report = {m: _validation_report(head, axes, part["validation"].only(m), ys["validation"], device, guard,
                                    consistency, [texts[i] for i in data.parts["validation"]], text_enc, m,
                                    disagreement)
              for m in modalities}
    if scores_out is not None:
        val = data.parts["validation"]
        probs = logits_to_probs(head, axes, part["validation"], device)
        np.savez_compressed(scores_out, calibration_idx=cal_idx, validation_idx=val,
                            **{f"cal_logits:{a.name}": cal_logits[a.name] for a in axes},
                            **{f"y:{a.name}": y[a.name] for a in axes},
                            **{f"val_probs:{a.name}": probs[a.name] for a in axes},
                            temperatures=np.array([a.temperature for a in axes]))
    timings["total_s"] = time.perf_counter() - started
    created = datetime.now(UTC)
    version = f"{data.name}-{created:%Y%m%d%H%M%S}-{data.fingerprint[:6]}"
    # Built through the schema: a trainer cannot write a manifest the readers would refuse.
    manifest = ModelManifest.model_validate({
        "version": version,
        "created_at": created.isoformat(timespec="seconds"),
        "encoders": {
            "text": {"kind": text_enc.kind, "base_id": text_enc.base_id, "id": text_enc.encoder_id,
                     "name": text_enc.name, "dim": text_enc.dim, "max_length": text_enc.max_length,
                     "pooling": text_enc.pooling, "normalise": True,
                     "lora": text_enc.lora if adapter is not None else None,
                     "include_base": text_enc.dual, "windows": getattr(text_enc, "windows", None)},
            "image": {"id": image_enc.encoder_id, "arch": image_enc.arch, "dim": image_enc.dim,
                      "preprocessing": asdict(image_enc.pre), **({"tail": tail_doc} if tail_doc else {})},
        },
        "head": {"config": head.cfg.to_json()},
        "axes": {a.name: a.to_json() for a in axes},
        "target_precision": target,
        "metrics": {"split": "validation", "modalities": report},
        "training": {
            "dataset": data.name, "fingerprint": data.fingerprint,
            "n": {k: int(len(v)) for k, v in data.parts.items()},
            "missing_images": data.missing_images,
            "near_duplicates": data.near_duplicates,
            "text_encoder": text_choice,
            **({"text_experts": "not fitted: no titles in the training part"}
               if cfg.text_experts and experts is None else {}),
            "inputs": inputs,
            # Values some record carries that the model never learnt (too rare in training).
            "dropped_values": rare_values(recs, train_idx, data.kinds, axes),
            "config": asdict(cfg), "head_log": head_log,
            "calibration": {**cal_log, "gaps": calibration_gaps(axes, target, cfg.confidence)},
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
        },
        "novelty": guard.to_json(),
        "consistency": consistency.to_json(),
        "disagreement": disagreement,
        **({"experts": experts.to_json()} if experts is not None else {}),
    }).to_json()
    state = head.export_state()  # float32, the lexical tables float16
    save_artifact(out_dir, Artifact(manifest=manifest, head=state, adapter=adapter,
                                    novelty=guard.arrays(),
                                    experts=experts.arrays() if experts is not None else None,
                                    image_tail=tail_state))
    cache.close()
    return manifest
