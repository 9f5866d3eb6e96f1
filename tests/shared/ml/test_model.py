"""A real model trained on the committed sample: quality, round-trip, robustness, CLI shapes."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shared.config import Settings
from shared.errors import ArtifactError
from shared.ml.artifact import HEAD, MANIFEST
from shared.ml.dataset import load_manifest, load_records, read_images
from shared.ml.predictor import Item, Tagger
from shared.ml.training import TrainConfig, prepare


@pytest.fixture(scope="module")
def held_out(sample_manifest: Path):
    """The sample's grouped validation items, as the sample model's training split them."""
    cfg = TrainConfig(calibration_fraction=0.2, validation_fraction=0.2)
    data = prepare(sample_manifest, cfg)
    val = data.parts["validation"]
    train = data.parts["train"]
    return ([data.records[i] for i in train], [data.records[i] for i in val],
            [data.blobs[i] for i in val])


def test_model_beats_the_majority_class_on_held_out_items(sample_tagger: Tagger, held_out) -> None:
    train, val, blobs = held_out
    preds = sample_tagger.predict([Item(r.text, b) for r, b in zip(val, blobs, strict=True)])
    for axis in ("articleType", "gender", "subCategory"):
        majority = Counter(r.labels[axis][0] for r in train).most_common(1)[0][0]
        base = np.mean([r.labels[axis][0] == majority for r in val])
        acc = np.mean([p.top(axis).value == r.labels[axis][0] for p, r in zip(preds, val,
                                                                             strict=True)])
        assert acc >= max(0.75, base + 0.3), (axis, acc, base)


def test_artifact_round_trip_gives_identical_scores(sample_model: Path, settings: Settings,
                                                    sample_tagger: Tagger, held_out,
                                                    tmp_path: Path) -> None:
    _, val, blobs = held_out
    items = [Item(r.text, b) for r, b in zip(val[:8], blobs[:8], strict=True)]
    copy = shutil.copytree(sample_model, tmp_path / "copy")
    again = Tagger.load(copy, settings=settings)
    assert again.version == sample_tagger.version
    a = sample_tagger.predict(items, top_k=5)
    b = again.predict(items, top_k=5)
    for pa, pb in zip(a, b, strict=True):
        assert pa.tags == pb.tags


def test_manifest_records_encoders_thresholds_and_metrics(sample_model: Path) -> None:
    m = json.loads((sample_model / MANIFEST).read_text())
    assert m["encoders"]["text"]["base_id"].startswith("hf:all-MiniLM-L6-v2@")
    assert m["encoders"]["image"]["id"].startswith("timm:tf_efficientnet_lite0@")
    assert m["encoders"]["image"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert set(m["axes"]) == {"gender", "masterCategory", "subCategory", "articleType",
                              "baseColour", "season", "usage"}
    assert m["axes"]["articleType"]["kind"] == "single"
    assert set(m["metrics"]["modalities"]) == {"text", "image", "both"}
    assert len(m["training"]["fingerprint"]) == 64
    size = sum(f.stat().st_size for f in sample_model.iterdir())
    assert size < 20_000_000


def test_each_modality_alone_still_tags(sample_tagger: Tagger, held_out) -> None:
    _, val, blobs = held_out
    r, good = val[0], blobs[0]
    corrupt, missing, empty = sample_tagger.predict([
        Item(r.text, good[: len(good) // 3] + b"garbage"),  # truncated JPEG
        Item(r.text, None),
        Item("", good),
    ])
    assert corrupt.image_error and corrupt.modalities == ("text",)
    assert missing.image_error is None and missing.modalities == ("text",)
    assert empty.modalities == ("image",)
    for p in (corrupt, missing, empty):
        assert p.error is None
        assert set(p.tags) == {a.name for a in sample_tagger.axes}
        assert all(t.status in {"auto", "review"} for ts in p.tags.values() for t in ts)
    (nothing,) = sample_tagger.predict([Item("  ", b"\x00\x01")])
    assert nothing.error and "cannot decode image" in nothing.error and not nothing.tags


def test_loading_refuses_other_encoders_and_corrupt_weights(sample_model: Path, settings: Settings,
                                                           tmp_path: Path) -> None:
    bad = shutil.copytree(sample_model, tmp_path / "bad")
    m = json.loads((bad / MANIFEST).read_text())
    m["encoders"]["image"]["id"] = "timm:tf_efficientnet_lite0@000000000000:256/224+colour-v1"
    (bad / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="needs image encoder timm:tf_efficientnet_lite0@0000"):
        Tagger.load(bad, settings=settings)

    trunc = shutil.copytree(sample_model, tmp_path / "trunc")
    data = (trunc / HEAD).read_bytes()
    (trunc / HEAD).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="head.safetensors: corrupt or truncated"):
        Tagger.load(trunc, settings=settings)
    with pytest.raises(ArtifactError, match="manifest.json: not found"):
        Tagger.load(tmp_path, settings=settings)


def test_second_training_run_reuses_the_embedding_cache(sample_model: Path, settings: Settings,
                                                        sample_manifest: Path) -> None:
    from shared.ml.cache import EmbeddingCache

    m = json.loads((sample_model / MANIFEST).read_text())
    cache = EmbeddingCache(settings.cache_dir / "embeddings.sqlite")
    assert cache.count(m["encoders"]["image"]["id"]) == 200
    assert cache.count(m["encoders"]["text"]["id"]) == 200
    cache.close()


def test_cli_evaluate_writes_the_documented_json(sample_model: Path, sample_manifest: Path,
                                                 settings: Settings, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import app
    from shared.config import get_settings

    monkeypatch.setenv("TAGGER_CACHE_DIR", str(settings.cache_dir))
    monkeypatch.setenv("TAGGER_DEVICE", "cpu")
    get_settings.cache_clear()
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(app, ["evaluate", "--model", str(sample_model), "--dataset",
                                   str(sample_manifest), "--modality", "text", "--json", str(out)])
    get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert set(report) == {"model", "dataset", "modality", "n", "abstentions", "axes"}
    assert report["dataset"] == "fashion-sample" and report["n"] == 200
    for metrics in report["axes"].values():
        assert {"n", "accuracy", "estimated_accuracy", "macro_f1", "auto_precision", "auto_precision_lower",
                "auto_coverage", "abstentions"} <= set(metrics)
        assert metrics.get("contradictions", 0) == 0
        if metrics["auto_precision"] is not None:
            assert metrics["auto_precision_lower"] <= metrics["auto_precision"]
        assert 0 <= metrics["accuracy"] <= 1


def test_cli_predict_and_errors(sample_model: Path, sample_manifest: Path, settings: Settings,
                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import app
    from shared.config import get_settings

    monkeypatch.setenv("TAGGER_CACHE_DIR", str(settings.cache_dir))
    get_settings.cache_clear()
    m = load_manifest(sample_manifest)
    rec = load_records(m)[0]
    img = tmp_path / "p.jpg"
    img.write_bytes(read_images(m, [rec.image_ref])[rec.image_ref])
    runner = CliRunner()
    res = runner.invoke(app, ["predict", "--model", str(sample_model), "--title", rec.text,
                              "--image", str(img), "--json"])
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["modalities"] == ["text", "image"] and "articleType" in body["tags"]
    res = runner.invoke(app, ["predict", "--model", str(sample_model)])
    assert res.exit_code == 2 and "give --title, --image or both" in res.output
    res = runner.invoke(app, ["evaluate", "--model", str(sample_model), "--dataset",
                              str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "manifest file not found" in res.output
    get_settings.cache_clear()
