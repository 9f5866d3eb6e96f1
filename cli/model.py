"""``tagger train``, ``tagger predict``, ``tagger evaluate``: the model library (shared.ml) from a shell."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cli.output import console, out
from cli.output import fail as _fail
from shared.errors import TaggerError


class Modality(StrEnum):
    text = "text"
    image = "image"
    both = "both"


class Fusion(StrEnum):
    gated = "gated"
    concat = "concat"


RATES = ("macro_f1", "auto_precision", "auto_precision_lower", "auto_coverage")


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def metrics_table(title: str, by_modality: dict[str, dict[str, dict]]) -> Table:
    """One row per axis: the headline (accuracy, micro-F1 for multi-label) of each modality
    given, then macro-F1 and auto-tag precision/coverage of the last one (the fused model)."""
    from shared.ml.evaluation import headline

    table = Table(title=title)
    table.add_column("axis")
    mods = list(by_modality)
    for m in mods:
        table.add_column(f"{m} acc", justify="right")
    last = mods[-1]
    # "prec ≥": the one-sided 95% lower bound of auto precision; "abstain": items judged out of the
    # model's domain; "contra": auto tags still contradicting another (0 after joint decoding).
    for col in ("macro-F1", "auto prec", "prec ≥", "auto cov", "abstain", "contra", "n"):
        table.add_column(f"{last} {col}" if len(mods) > 1 else col, justify="right")
    for axis, mm in by_modality[last].items():
        row = [axis] + [_fmt(headline(by_modality[m].get(axis, {}))) for m in mods]
        row += [_fmt(mm.get(k)) for k in RATES]
        row += [_count(mm.get("abstentions")), _count(mm.get("contradictions")), str(mm.get("n", 0))]
        table.add_row(*row)
    return table


def _count(v: int | None) -> str:
    return "—" if v is None else str(v)


NEVER_SHOWN = 8  # values named per axis in train's never-auto list; the rest are counted


def _auto_lines(manifest: dict) -> list[str]:
    """Per axis, how many values may be auto-applied and which never will, with the evidence
    that fell short (most predicted first): what a user must know before trusting ``auto``."""
    from rich.markup import escape

    cal = manifest["training"].get("calibration", {})
    conf = cal.get("confidence", 0.95)
    source = (f"out-of-fold scores of {cal['n']} items, {cal['k']} folds"
              if cal.get("method") == "cross-fit" else f"{cal.get('n', '?')} calibration items")
    lines = [f"[bold]auto-apply[/]: a value is auto only where the {conf:.0%} lower bound of its "
             f"precision reaches {manifest['target_precision']:.2f} ({source})"]
    for name, a in manifest["axes"].items():
        ev = a.get("evidence", {})
        never = sorted((v for v in a["values"] if not ev.get(v, {}).get("auto")),
                       key=lambda v: -ev.get(v, {}).get("proposed", 0))
        head = f"  {escape(name)}: {len(a['values']) - len(never)} of {len(a['values'])} auto"
        if not never:
            lines.append(head)
            continue
        shown = [f"{escape(v)} ({ev.get(v, {}).get('proposed', 0)} predicted, best bound "
                 f"{ev.get(v, {}).get('lower_bound', 0.0):.3f})" for v in never[:NEVER_SHOWN]]
        more = f" … and {len(never) - NEVER_SHOWN} more" if len(never) > NEVER_SHOWN else ""
        lines.append(f"{head}; [yellow]never auto[/]: {', '.join(shown)}{more}")
    return lines


def train(
    dataset: Annotated[Path, typer.Option(help="Dataset manifest (YAML).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the model to.")],
    seed: int = 0,
    text_epochs: Annotated[int, typer.Option(help="LoRA epochs for the text encoder.")] = 2,
    no_finetune_text: Annotated[bool, typer.Option(help="Keep the text encoder frozen.")] = False,
    fusion: Fusion = Fusion.gated,
    head_epochs: int = 40,
    target_precision: Annotated[float | None, typer.Option(
        help="Precision whose lower confidence bound an auto tag must reach on calibration "
        "scores (default: settings, 0.98).")
    ] = None,
    calibration_folds: Annotated[int, typer.Option(
        help="Grouped folds of out-of-fold calibration scores; 0 or 1: the calibration part only.")
    ] = 5,
    confidence: Annotated[float, typer.Option(
        help="Confidence of that lower bound (one-sided Clopper-Pearson).")] = 0.95,
    label_smoothing: Annotated[float, typer.Option(
        help="Head label smoothing; 0 sharpens the top scores (more auto coverage, a little less "
        "accuracy: docs/MODEL.md).")] = 0.05,
    class_weight_power: Annotated[float, typer.Option(
        help="Class weight = count^-power in the head's loss; 0: unweighted.")] = 0.3,
    holdout: Annotated[Path | None, typer.Option(
        help="File of record ids, one per line: the validation part (e.g. a catalogue's official "
        "test split) instead of a random grouped tenth.")] = None,
) -> None:
    """Train, calibrate and evaluate a model on a dataset manifest; write its artifact."""
    from shared.ml.head_training import HeadTrainConfig
    from shared.ml.training import TrainConfig
    from shared.ml.training import train as run_train

    cfg = TrainConfig(seed=seed, finetune_text=not no_finetune_text, text_epochs=text_epochs,
                      target_precision=target_precision, calibration_folds=calibration_folds,
                      confidence=confidence,
                      head=HeadTrainConfig(fusion=fusion.value, epochs=head_epochs, seed=seed,
                                           label_smoothing=label_smoothing,
                                           class_weight_power=class_weight_power))
    try:
        from shared.ml.dataset import read_ids

        held = read_ids(holdout) if holdout is not None else None
        manifest = run_train(dataset, out_dir, cfg=cfg, holdout=held)
    except TaggerError as exc:
        raise _fail(exc) from None
    tr = manifest["training"]
    out.print(metrics_table(
        f"{manifest['version']} — grouped validation split (n={tr['n']['validation']})",
        manifest["metrics"]["modalities"]))
    for line in _auto_lines(manifest):
        out.print(line, soft_wrap=True)
    out.print(f"model written to [bold]{out_dir}[/] in {tr['timings_s']['total_s']:.0f}s "
              f"(train {tr['n']['train']}, calibration {tr['n']['calibration']}, "
              f"validation {tr['n']['validation']}; missing images {tr['missing_images']})")


def predict(
    title: Annotated[str, typer.Option(help="Product title / description.")] = "",
    image: Annotated[Path | None, typer.Option(help="Product photo file.")] = None,
    model: Annotated[Path | None, typer.Option(help="Model directory (default: shipped).")] = None,
    top_k: int = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Tag one product from its title and/or photo."""
    from shared.ml.predictor import Item, Tagger

    if not title.strip() and image is None:
        raise _fail(ValueError("give --title, --image or both"))
    try:
        data = image.read_bytes() if image else None
    except OSError as exc:
        raise _fail(ValueError(f"--image: cannot read {image}: {exc.strerror}")) from None
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
    from shared.config import get_settings
    from shared.ml.cache import EmbeddingCache
    from shared.ml.predictor import Tagger
    from shared.ml.report import evaluate_dataset

    try:
        cache = EmbeddingCache(get_settings().cache_dir / "embeddings.sqlite")
        tagger = Tagger.load(model, cache=cache)
        report = evaluate_dataset(tagger, dataset, modality.value, show_progress=sys.stderr.isatty())
    except TaggerError as exc:
        raise _fail(exc) from None
    out.print(metrics_table(
        f"{report['model']} on {report['dataset']} (n={report['n']}, {modality.value})",
        {modality.value: report["axes"]}))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        out.print(f"report written to {json_out}")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``predict`` and ``evaluate`` to the root ``tagger`` command."""
    for fn in (train, predict, evaluate):
        app.command()(fn)
