"""Consistent tags: contradictions learned from real labels (no taxonomy written here), and no
product ever carries two contradicting auto tags, checked over whole evaluations."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from shared.config import Settings
from shared.ml.consistency import Consistency
from shared.ml.dataset import load_manifest, load_records, read_images
from shared.ml.labels import Axis, build_axes, targets
from shared.ml.predictor import AUTO, REVIEW, Item, Prediction, Tagger, TagScore
from shared.ml.report import evaluate_dataset

HIERARCHY = ("articleType", "subCategory", "masterCategory")


@pytest.fixture(scope="module")
def sample(sample_manifest: Path) -> tuple[list[Axis], dict[str, np.ndarray], list]:
    """The committed sample's axes, targets and records."""
    m = load_manifest(sample_manifest)
    records = load_records(m)
    axes = build_axes(records, {n: s.kind for n, s in m.axes.items()})
    return axes, {a.name: targets(records, a) for a in axes}, records


@pytest.fixture(scope="module")
def fitted(sample) -> Consistency:
    axes, y, _ = sample
    return Consistency.fit(axes, y)


def test_learns_the_hierarchy_from_labels_alone(sample, fitted: Consistency) -> None:
    """Every article type implies the subCategory and masterCategory its products carry."""
    _, _, records = sample
    seen = {(r.labels["articleType"][0], r.labels["subCategory"][0], r.labels["masterCategory"][0])
            for r in records}
    assert len(seen) == 10
    for article, sub, master in seen:
        assert fitted.implied("articleType", article, "subCategory") == sub
        assert fitted.implied("articleType", article, "masterCategory") == master
        assert fitted.implied("subCategory", sub, "masterCategory") == master
        assert fitted.contradicts("articleType", article, "masterCategory", "Footwear") == (
            master != "Footwear")
    # gender vs articleType: never together though 7 were expected; seen together: allowed.
    assert fitted.contradicts("gender", "Men", "articleType", "Heels")
    assert fitted.contradicts("articleType", "Handbags", "gender", "Men")
    assert not fitted.contradicts("gender", "Women", "articleType", "Tshirts")  # 6 of them
    assert not fitted.contradicts("gender", "Men", "baseColour", "Black")


def test_round_trips_through_compact_json(sample, fitted: Consistency) -> None:
    axes, _, _ = sample
    doc = json.loads(json.dumps(fitted.to_json()))
    back = Consistency.from_json(doc)
    assert back.rows == fitted.rows
    for key, m in fitted.matrices(axes).items():
        assert (back.matrices(axes)[key] == m).all()
    assert len(json.dumps(doc)) < 5_000  # only contradicting pairs, shortest form per value


def _auto(axes: list[Axis], n: int, tags: dict[int, dict[str, str]]) -> dict[str, np.ndarray]:
    out = {a.name: np.zeros((n, len(a.values)), bool) for a in axes}
    for k, item in tags.items():
        for axis, value in item.items():
            a = next(x for x in axes if x.name == axis)
            out[axis][k, a.values.index(value)] = True
    return out


def test_a_contradiction_sends_both_axes_to_review(sample, fitted: Consistency) -> None:
    axes, _, _ = sample
    auto = _auto(axes, 3, {
        0: {"articleType": "Tshirts", "masterCategory": "Footwear", "baseColour": "Black"},
        1: {"articleType": "Tshirts", "masterCategory": "Apparel"},
        2: {"articleType": "Heels", "gender": "Men"},
    })
    before = fitted.count_contradictions(axes, auto)
    assert before["articleType"] == 2 and before["masterCategory"] == 1 and before["gender"] == 1
    after, contradicted = fitted.resolve(axes, auto)
    assert contradicted["articleType"].tolist() == [True, False, True]
    assert contradicted["masterCategory"].tolist() == [True, False, False]
    assert not after["articleType"][0].any() and not after["masterCategory"][0].any()
    assert after["baseColour"][0].any()  # not involved: stays auto
    assert after["articleType"][1].any() and after["masterCategory"][1].any()
    assert set(fitted.count_contradictions(axes, after).values()) == {0}


def _check_no_contradicting_auto(tagger: Tagger, c: Consistency, preds: list[Prediction]) -> None:
    """Pair by pair, with ``contradicts`` (not the decoder under test)."""
    for p in preds:
        auto = [(axis, t.value) for axis, ranked in p.tags.items() for t in ranked if t.status == AUTO]
        bad = [(x, y) for x, y in combinations(auto, 2) if x[0] != y[0] and c.contradicts(*x, *y)]
        assert bad == []
        for axis in p.contradictions:
            assert all(t.status == REVIEW for t in p.tags[axis])


def _whole_evaluation(tagger: Tagger, manifest: Path) -> tuple[dict, list[Prediction]]:
    report = evaluate_dataset(tagger, manifest, show_progress=False)
    m = load_manifest(manifest)
    records = load_records(m)
    images = read_images(m, [r.image_ref for r in records])
    preds = tagger.predict([Item(r.text, images.get(r.image_ref)) for r in records])
    return report, preds


def test_predictor_step_resolves_a_synthetic_contradiction(sample_tagger: Tagger) -> None:
    c = sample_tagger.consistency
    assert c is not None  # the training hook stored one in the manifest
    p = Prediction(modalities=("text",), tags={
        "articleType": [TagScore("Tshirts", 0.99, AUTO)],
        "masterCategory": [TagScore("Footwear", 0.99, AUTO), TagScore("Apparel", 0.01, REVIEW)],
        "subCategory": [TagScore("Topwear", 0.99, AUTO)],
    })
    (out,) = sample_tagger._consistent([p])
    # Footwear contradicts both Tshirts and Topwear; Tshirts and Topwear agree.
    assert set(out.contradictions) == {"masterCategory", "articleType", "subCategory"}
    assert out.tags["masterCategory"][0].status == REVIEW
    assert out.tags["articleType"][0].status == REVIEW


def test_no_contradicting_auto_tags_sample_model(sample_tagger: Tagger, sample_manifest: Path) -> None:
    report, preds = _whole_evaluation(sample_tagger, sample_manifest)
    single = [a.name for a in sample_tagger.axes if a.kind == "single"]
    assert all(report["axes"][axis]["contradictions"] == 0 for axis in single)
    assert all(report["axes"][axis]["contradiction_reviews"] >= 0 for axis in single)
    _check_no_contradicting_auto(sample_tagger, sample_tagger.consistency, preds)


def test_no_contradicting_auto_tags_default_model(settings: Settings, sample, sample_manifest: Path,
                                                  ) -> None:
    """The shipped model on the sample. Its manifest predates ``consistency`` unless it was added;
    then a table fitted on the sample's own labels (in-sample: the sample is from its catalogue)."""
    tagger = Tagger.load(settings=settings)
    if tagger.consistency is None:
        axes, y, _ = sample
        tagger.consistency = Consistency.fit(axes, y)
    report, preds = _whole_evaluation(tagger, sample_manifest)
    assert {report["axes"][a]["contradictions"] for a in report["axes"]} == {0}
    _check_no_contradicting_auto(tagger, tagger.consistency, preds)
    assert any(t.status == AUTO for p in preds for t in p.tags["articleType"])  # still tags
