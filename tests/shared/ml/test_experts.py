"""Text experts (issue 12): the baseline's logistic regressions stored as arrays and added to the
head's logits. Their scores equal the baseline's, they survive the artifact round trip, a model
trained with them is calibrated on scores that include them, and it refuses to guess without them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.config import Settings
from shared.ml.baseline import Baseline
from shared.ml.experts import FLOOR, TextExperts, fit_weight
from shared.ml.labels import Axis

TITLES = ["red cotton shirt", "blue denim jeans", "red silk shirt", "black leather shoes",
          "blue cotton shirt", "black running shoes", "白色 衬衫", "blue jeans slim", "red shoes",
          "black denim jeans"] * 3
KIND = [0, 1, 0, 2, 0, 2, 0, 1, 2, 1] * 3  # shirt / jeans / shoes
COLOUR = [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0],
          [1, 0, 0], [0, 1, 1]] * 3  # multi-label: red / blue / black


def axes() -> list[Axis]:
    return [Axis("kind", "single", ["shirt", "jeans", "shoes", "never-seen"]),
            Axis("colour", "multi", ["red", "blue", "black"])]


def targets() -> dict[str, np.ndarray]:
    return {"kind": np.array(KIND), "colour": np.array(COLOUR)}


def test_scores_are_the_baselines_log_probabilities() -> None:
    ax, y = axes(), targets()
    experts = TextExperts.fit(ax, TITLES, y)
    base = Baseline.fit(ax, TITLES, y)
    probe = ["red shirt", "black jeans", "shoes of leather", "未知"]
    got = experts.scores(probe)
    want = base.probabilities(ax, probe)
    seen = want["kind"][:, :3]
    # float16 coefficients: the stored experts are the baseline up to rounding
    assert np.allclose(np.exp(got["kind"][:, :3]), seen, atol=2e-3)
    assert (got["kind"][:, 3] == FLOOR).all()  # a value the experts never saw: floored, not -inf
    logit = np.log(want["colour"] / (1 - want["colour"]))
    assert np.allclose(got["colour"], np.clip(logit, FLOOR, -FLOOR), atol=2e-2)
    assert (experts.scores([""])["kind"] == 0).all()  # no title: no opinion (the priors are the head's)


def test_arrays_round_trip_and_weights_scale_the_offsets() -> None:
    ax, y = axes(), targets()
    experts = TextExperts.fit(ax, TITLES, y)
    experts.weight = {"kind": 0.5, "colour": 0.0}
    back = TextExperts.from_artifact(json.loads(json.dumps(experts.to_json())), experts.arrays())
    probe = ["red shirt", "白色 衬衫 slim"]
    for name in ("kind", "colour"):
        assert np.array_equal(back.scores(probe)[name], experts.scores(probe)[name])
    off = back.offsets(probe)
    assert np.array_equal(off["kind"], 0.5 * experts.scores(probe)["kind"])
    assert not off["colour"].any()
    assert back.vocabulary == experts.vocabulary and "衬衫" in " ".join(back.vocabulary)


def test_weight_is_zero_when_the_experts_only_add_noise_and_positive_when_they_know() -> None:
    rng = np.random.default_rng(0)
    axis = Axis("kind", "single", ["a", "b", "c"])
    y = rng.integers(0, 3, 600)
    head = np.eye(3)[y] * 2.0 + rng.normal(0, 1.0, (600, 3))  # a decent head
    noise = np.log(rng.dirichlet(np.ones(3), 600))  # experts that know nothing
    assert fit_weight(axis, head, noise, y) == 0.0
    knowing = np.log(np.clip(np.eye(3)[y] * 0.9 + 0.05, 1e-6, 1))  # experts that are right
    assert fit_weight(axis, head, knowing, y) > 0.0


@pytest.fixture(scope="module")
def experts_model(tmp_path_factory: pytest.TempPathFactory, settings: Settings,
                  sample_manifest: Path) -> Path:
    from shared.ml.head_training import HeadTrainConfig
    from shared.ml.training import TrainConfig, train

    out = tmp_path_factory.mktemp("experts-model")
    cfg = TrainConfig(calibration_fraction=0.2, validation_fraction=0.2, finetune_text=False,
                      calibration_folds=3, text_experts=True, head=HeadTrainConfig(epochs=8))
    train(sample_manifest, out, settings=settings, cfg=cfg, show_progress=False)
    return out


def test_a_model_trained_with_experts_saves_loads_and_predicts(
    experts_model: Path, settings: Settings, sample_manifest: Path,
) -> None:
    from shared.ml.predictor import Tagger
    from shared.ml.report import evaluate_dataset
    from tests.shared.ml.test_lexical import shipped_items

    m = json.loads((experts_model / "manifest.json").read_text())
    assert "experts.safetensors" in m["files"] and m["training"]["config"]["text_experts"] is True
    assert set(m["experts"]["axes"]) == set(m["axes"]) and "text_experts_s" in m["training"]["timings_s"]
    tagger = Tagger.load(experts_model, settings=settings)
    assert tagger.experts is not None
    items = shipped_items(sample_manifest)
    preds = tagger.predict(items)
    assert all(p.error is None for p in preds)
    assert [p.tags for p in tagger.predict(items)] == [p.tags for p in preds]
    # The report computed at training time is what evaluation of the saved model gives.
    report = evaluate_dataset(tagger, sample_manifest, "both", show_progress=False)
    assert report["axes"]["masterCategory"]["n"] > 0
    tx, tm, ix, im, _ = tagger.features(items[:2])
    with pytest.raises(ValueError, match="experts"):
        tagger.probabilities(tx, tm, ix, im)
    texts = [i.text or "" for i in items[:2]]
    with_experts = tagger.probabilities(tx, tm, ix, im, offsets=tagger.offsets(texts))
    weighted = [n for n, d in m["experts"]["axes"].items() if d["weight"] > 0]
    assert weighted  # on these titles the regressions know something the 8-epoch head does not
    zero = {n: 0 * v for n, v in tagger.offsets(texts).items()}
    without = tagger.probabilities(tx, tm, ix, im, offsets=zero)
    for name in weighted:  # an axis that weighs its experts answers differently without them
        assert not np.allclose(with_experts[name], without[name]), name


def test_a_model_without_experts_has_none(settings: Settings, sample_model: Path) -> None:
    from shared.ml.predictor import Tagger

    tagger = Tagger.load(sample_model, settings=settings)  # trained without them (library default)
    assert tagger.experts is None and tagger.offsets(["x"]) is None
    assert "experts" not in tagger.manifest
    shipped = Tagger.load(settings=settings)  # the shipped model carries them since 2026-12-07
    assert shipped.experts is not None and shipped.offsets(["x"])["articleType"].shape[0] == 1
