"""The TF-IDF + logistic regression baseline: fits any script, and reads the same targets as the model."""

from __future__ import annotations

import numpy as np

from shared.config import SAMPLE_MANIFEST
from shared.ml.baseline import Baseline
from shared.ml.dataset import load_manifest, load_records
from shared.ml.labels import Axis, build_axes, targets


def test_fits_the_sample_and_beats_the_majority_class() -> None:
    m = load_manifest(SAMPLE_MANIFEST)
    recs = load_records(m)
    axes = build_axes(recs[:150], {n: s.kind for n, s in m.axes.items()}, min_count=2)
    y = {a.name: targets(recs, a) for a in axes}
    texts = [r.text for r in recs]
    model = Baseline.fit(axes, texts[:150], {a.name: y[a.name][:150] for a in axes})
    probs = model.probabilities(axes, texts[150:])
    for a in axes:
        p, truth = probs[a.name], y[a.name][150:]
        assert p.shape == (50, len(a.values))
        assert np.allclose(p.sum(1), 1.0)
        keep = truth >= 0
        majority = np.bincount(truth[keep]).max() / keep.sum()
        if a.name in ("articleType", "masterCategory"):
            assert (p[keep].argmax(1) == truth[keep]).mean() > majority, a.name


def test_reads_chinese_and_multi_label() -> None:
    """Character n-grams need no vocabulary: Chinese titles separate; a multi-label axis gets a
    probability per value."""
    texts = ["兰蔻小黑瓶精华", "兰蔻粉水爽肤水", "雅诗兰黛小棕瓶", "雅诗兰黛眼霜"] * 5
    brand = Axis("brand", "single", ["兰蔻", "雅诗兰黛"])
    kinds = Axis("kind", "multi", ["精华", "水"])
    y = {"brand": np.array([0, 0, 1, 1] * 5),
         "kind": np.array([[1, 0], [0, 1], [1, 0], [0, 0]] * 5, dtype=np.float32)}
    model = Baseline.fit([brand, kinds], texts, y)
    probs = model.probabilities([brand, kinds], ["兰蔻精华液", "雅诗兰黛精华"])
    assert list(probs["brand"].argmax(1)) == [0, 1]
    assert probs["kind"].shape == (2, 2) and probs["kind"][0, 0] > 0.5
