"""``tagger train|predict|evaluate``: arguments checked before any model loads, help and tables
readable at 80 columns, small-catalogue warnings by name (issue 12, points 3 and 7)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli import model as cli_model
from cli import model_report as cli_report
from tests.cli.root import root_with

app = root_with(cli_model.register)
ENV = {"COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1"}


@pytest.fixture(autouse=True)
def _no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any test here that reaches a model load or a training run has checked too late."""
    from shared.ml import predictor, training

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(predictor.Tagger, "load", classmethod(boom))
    monkeypatch.setattr(training, "train", boom)


def run(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


def test_train_help_shows_a_sensible_finetune_pair() -> None:
    res = run("train", "--help")
    assert res.exit_code == 0
    text = re.sub(r"\s+", " ", res.output)
    assert "--no-no-" not in text
    assert "--finetune-text / --no-finetune-text" in text and "…" not in text
    for opt in ("--validation-fraction", "--calibration-fraction", "--min-value-count", "--json",
                "--lexical-buckets", "--lexical-dim", "--head-ensemble"):
        assert opt in text


@pytest.mark.parametrize(("args", "named"), [
    (["--validation-fraction", "0.5", "--calibration-fraction", "0.45"], "--validation-fraction"),
    (["--calibration-fraction", "0"], "--calibration-fraction"),
    (["--min-value-count", "0"], "--min-value-count"),
    (["--confidence", "1.5"], "--confidence"),
    (["--lexical-buckets", "1"], "--lexical-buckets"),
    (["--lexical-buckets", "-5"], "--lexical-buckets"),
    (["--lexical-buckets", "1024", "--lexical-dim", "0"], "--lexical-dim"),
    (["--image-tail-epochs", "-1"], "--image-tail-epochs"),
    (["--head-ensemble", "0"], "--head-ensemble"),
])
def test_train_refuses_bad_options_before_training(
    tmp_path: Path, sample_manifest: Path, args: list[str], named: str,
) -> None:
    res = run("train", "--dataset", str(sample_manifest), "--out", str(tmp_path / "m"),
              "--no-finetune-text", *args)
    assert res.exit_code == 2, res.output
    assert named in res.output and not (tmp_path / "m").exists()


def test_train_refuses_a_missing_dataset_or_holdout(tmp_path: Path, sample_manifest: Path) -> None:
    res = run("train", "--dataset", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "m"))
    assert res.exit_code == 2 and "--dataset" in res.output
    res = run("train", "--dataset", str(sample_manifest), "--out", str(tmp_path / "m"),
              "--holdout", str(tmp_path / "ids.txt"))
    assert res.exit_code == 2 and "--holdout" in res.output


def test_evaluate_checks_arguments_before_loading(tmp_path: Path, sample_manifest: Path) -> None:
    res = run("evaluate", "--dataset", str(tmp_path / "nope.yaml"))
    assert res.exit_code == 2 and "--dataset" in res.output and "not found" in res.output
    (tmp_path / "empty").mkdir()
    res = run("evaluate", "--dataset", str(sample_manifest), "--model", str(tmp_path / "empty"))
    assert res.exit_code == 2 and "--model" in res.output and "manifest.json" in res.output
    res = run("evaluate", "--dataset", str(sample_manifest), "--modality", "audio")
    assert res.exit_code == 2 and "--modality" in res.output


def test_predict_checks_the_model_before_loading(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = run("predict", "--title", "red shirt", "--model", str(tmp_path / "empty"))
    assert res.exit_code == 2 and "--model" in res.output
    res = run("predict", "--title", "red shirt", "--top-k", "0")
    assert res.exit_code == 2 and "--top-k" in res.output


def _metrics(n: int = 6626) -> dict:
    return {"accuracy": 0.9771, "macro_f1": 0.85, "auto_precision": 0.9912,
            "auto_precision_lower": 0.9851, "auto_coverage": 0.8123, "abstentions": 12,
            "contradictions": 0, "n": n}


def test_metrics_table_fits_80_columns() -> None:
    axes = ["gender", "masterCategory", "subCategory", "articleType", "baseColour"]
    by = {m: {a: _metrics() for a in axes} for m in ("text", "image", "both")}
    console = Console(width=80, record=True, color_system=None)
    console.print(cli_report.metrics_table("fashion-small-20260101000000-abcdef — validation", by))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for a in axes:
        row = r"\s+".join([a, ".977", ".977", ".977", ".850", ".991", ".985", ".812", "12", "0", "6626"])
        assert re.search(row.replace(".", r"\."), text)


def test_a_text_only_report_has_no_image_column() -> None:
    console = Console(width=80, record=True, color_system=None)
    by = {"text": {"brand": _metrics()}, "both": {"brand": _metrics()}}
    console.print(cli_report.metrics_table("m", by))
    assert "image" not in console.export_text()


def test_training_warnings_name_rare_and_uncalibrated_values() -> None:
    manifest = {"target_precision": 0.98, "training": {
        "config": {"min_value_count": 2},
        "dropped_values": {"brand": {"Acme": 1, "Zed": 0}},
        "calibration": {"gaps": {
            "brand": {"auto_values": 0, "values": 3, "needed": 149, "too_few": ["AHC", "兰蔻"],
                      "not_precise": ["sk2"]}}}}}
    lines = cli_report.training_warnings(manifest)
    assert any("brand: 2 values seen fewer than 2 times" in ln and "Acme (1), Zed (0)" in ln
               for ln in lines)
    assert any("brand: cannot be calibrated" in ln for ln in lines)
    assert any("fewer than 149 calibration predictions" in ln and "AHC, 兰蔻" in ln for ln in lines)


def test_the_commands_defaults_are_the_measured_recipe() -> None:
    """bench.catalogues trains with `tagger train`'s own defaults (cli.model.train_config), so the
    every-catalogue table in docs/MODEL.md is what a new user gets from the command alone."""
    from cli.model import train_config

    cfg = train_config()
    assert cfg.text_experts and not cfg.finetune_text and cfg.text_encoder is None
    assert cfg.head.lexical_buckets == 0 and cfg.head.label_smoothing == 0
    assert cfg.head.class_weight_power == 0 and cfg.head.min_steps == 2000 and cfg.head.relative_stop
    assert cfg.calibration_folds == 5 and cfg.confidence == 0.95
    assert cfg.pool_thin_values is None and cfg.text_windows == 1  # chosen by the catalogue
    assert not cfg.pool_unproven and train_config(pool_unproven=True).pool_unproven
    assert cfg.near_duplicate_similarity is None  # chosen by the catalogue: photos only -> 0.8
    changed = train_config(text_experts=False, lexical_buckets=1024, near_duplicate_similarity=0.8)
    assert not changed.text_experts and changed.head.lexical_buckets == 1024
    assert changed.near_duplicate_similarity == 0.8


def test_a_photo_only_catalogue_without_near_duplicate_grouping_is_warned() -> None:
    def lines(inputs: dict, similarity: float) -> list[str]:
        return cli_report.training_warnings({"target_precision": 0.98, "training": {
            "inputs": inputs, "config": {"near_duplicate_similarity": similarity}}})

    assert any("--near-duplicate-similarity 0.8" in ln for ln in lines({"text": 0, "image": 50}, 0.0))
    assert not lines({"text": 0, "image": 50}, 0.8)
    assert not lines({"text": 50, "image": 50}, 0.0)  # titles: the folds group by title too
    assert not lines({}, 0.0)  # a manifest from before inputs were recorded


def test_train_says_what_near_duplicate_grouping_did() -> None:
    log = {"pairs": 900, "joined": 700, "skipped_for_size": 3, "largest_group": 19,
           "similarity": 0.8, "chosen_by": "photos without titles"}
    line = cli_report.near_duplicate_line({"training": {"near_duplicates": log}})
    assert "0.8 (chosen by: photos without titles)" in line and "700 joins" in line
    assert cli_report.near_duplicate_line({"training": {"near_duplicates": None}}) is None


def test_train_lists_auto_values_and_a_pooled_group() -> None:
    pool = {"values": 2, "proposed": 300, "n": 250, "hits": 248, "lower_bound": 0.9812,
            "threshold": 0.91, "auto": True}
    manifest = {"target_precision": 0.98, "training": {"calibration": {
        "method": "cross-fit", "n": 1000, "k": 5, "confidence": 0.95}}, "axes": {"type": {
            "values": ["Tshirts", "Ties", "Cufflinks", "Wallets"], "evidence": {
                "Tshirts": {"auto": True, "proposed": 600},
                "Ties": {"auto": True, "pooled": True, "proposed": 100, "pool": pool},
                "Cufflinks": {"auto": True, "pooled": True, "proposed": 90, "pool": pool},
                "Wallets": {"auto": False, "proposed": 400, "lower_bound": 0.9512}}}}}
    text = " ".join(cli_report.auto_lines(manifest))
    assert "type: 3 of 4 auto (2 of them too rare to prove alone, proven together: 248 of 250" in text
    assert "never auto[/]: Wallets (400 predicted, best bound 0.951)" in text
    assert "too rare to prove it alone:" not in text  # a model from before the choice says nothing
    pool["left_out"] = 1
    manifest["axes"]["type"]["evidence"]["Wallets"].update(
        proposed=40, left_out={"reason": "under the target", "n": 40, "hits": 36})
    text = " ".join(cli_report.auto_lines(manifest))
    assert "bound 0.981; 1 left out, their own record under the target)" in text
    assert "Wallets (40 predicted, left out of the pool: 36 of 40 right at its cut)" in text
    # The shipped manifest's form: the reason alone, the record in the evidence itself.
    manifest["axes"]["type"]["evidence"]["Wallets"].update(left_out="under the target", n=38, hits=30)
    assert "left out of the pool: 30 of 38 right at its cut" in " ".join(cli_report.auto_lines(manifest))
    manifest["training"]["calibration"]["pool_thin_values"] = {"on": True, "chosen_by": "default"}
    text = " ".join(cli_report.auto_lines(manifest))
    assert "too rare to prove it alone: proven together, one cut per axis (chosen by: default; " \
           "--no-pool-thin-values to change)" in text
    manifest["training"]["calibration"]["pool_thin_values"]["unproven"] = True
    text = " ".join(cli_report.auto_lines(manifest))
    assert "values that did not prove it alone: proven together" in text
    assert "2 of them unproven alone, proven together" in text
