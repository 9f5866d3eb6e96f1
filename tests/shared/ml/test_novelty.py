"""The novelty guard: junk and out-of-domain items never get ``auto`` tags, in-domain items rarely
abstain; real models (the sample's and the shipped one), the real tokenizer, no mocks."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.config import Settings
from shared.errors import ArtifactError
from shared.ml.artifact import NOVELTY, load_artifact, save_artifact
from shared.ml.head_training import Features
from shared.ml.manifest import read_manifest
from shared.ml.novelty import (
    NoveltyGuard,
    fit_guard,
    fit_reference,
    spherical_kmeans,
    unknown_token_share,
    unseen_script_share,
)
from shared.ml.predictor import AUTO, Item, Tagger
from shared.ml.training import Prepared, TrainConfig, prepare
from shared.registry import artifact_prefix, fetch_artifact, publish_artifact
from shared.storage import LocalStore

JUNK_TITLES = [
    "👗👠🔥✨", "😍😍 👟",  # emoji only
    "asdkjh qwpoeiru zxmcnv", "qwerty uiop asdf ghjkl",  # keyboard mash
    "兰蔻小黑瓶精华肌底液50ml", "女士夏季连衣裙",  # Chinese (cosmetics; a women's summer dress)
    "فستان صيفي للنساء", "महिलाओं के लिए सूती कुर्ता",  # Arabic, Devanagari
    "Samsung 55 inch 4K UHD Smart LED TV", "Logitech MX Master 3S Wireless Mouse",  # electronics
    "Heinz Tomato Ketchup 500g", "Fresh Bananas 1kg Bunch",  # groceries
]
MAX_FALSE_ABSTENTION = 0.05


def noise_photo(seed: int, size: tuple[int, int] = (224, 224)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def junk_items() -> list[Item]:
    photos = [Item("", noise_photo(0)), Item("", noise_photo(1, (60, 80)))]  # no title, noise photo
    return [Item(t) for t in JUNK_TITLES] + photos


@pytest.fixture(scope="module")
def sample_parts(sample_manifest: Path) -> Prepared:
    """The sample split exactly as the ``sample_model`` fixture's training split it."""
    return prepare(sample_manifest, TrainConfig(calibration_fraction=0.2, validation_fraction=0.2))


@pytest.fixture(scope="module")
def default_tagger(settings: Settings, sample_parts: Prepared) -> Tagger:
    """The shipped model; while its artifact predates the guard, one fitted on the sample's
    features (training part for the reference, calibration part for the limits)."""
    tagger = Tagger.load(settings=settings)
    if tagger.guard is None:
        items = [Item(r.text, b) for r, b in zip(sample_parts.records, sample_parts.blobs, strict=True)]
        tx, tm, ix, im, _ = tagger.features(items)
        tagger.guard = fit_guard(Features(tx, tm, ix, im), sample_parts.parts,
                                 [r.text for r in sample_parts.records], tagger.text_encoder.tokenizer,
                                 tagger.image_encoder.backbone_dim)
    return tagger


def assert_no_auto(preds) -> None:
    for item, p in zip(junk_items(), preds, strict=True):
        assert p.novelty is not None and p.novelty >= 1.0, (item.text, p.novelty)
        assert p.abstain_reason, item.text
        auto = [(a, t.value) for a, ranked in p.tags.items() for t in ranked if t.status == AUTO]
        assert auto == [], (item.text, auto)


def false_abstention(tagger: Tagger, data: Prepared) -> float:
    val = data.parts["validation"]
    preds = tagger.predict([Item(data.records[i].text, data.blobs[i]) for i in val])
    flagged = [(data.records[i].text, p.abstain_reason) for i, p in zip(val, preds, strict=True)
               if p.abstain_reason]
    assert all(p.novelty is not None for p in preds)
    return len(flagged) / len(val)


@pytest.mark.parametrize("which", ["sample", "default"])
def test_junk_never_gets_an_auto_tag(which: str, request: pytest.FixtureRequest) -> None:
    tagger: Tagger = request.getfixturevalue("sample_tagger" if which == "sample" else "default_tagger")
    assert tagger.guard is not None
    assert_no_auto(tagger.predict(junk_items()))


@pytest.mark.parametrize("which", ["sample", "default"])
def test_held_out_in_domain_items_rarely_abstain(which: str, request: pytest.FixtureRequest,
                                                 sample_parts: Prepared) -> None:
    tagger: Tagger = request.getfixturevalue("sample_tagger" if which == "sample" else "default_tagger")
    assert false_abstention(tagger, sample_parts) <= MAX_FALSE_ABSTENTION


def test_novelty_on_ready_made_features(sample_tagger: Tagger) -> None:
    """Evaluation's path: features first, then probabilities and novelty from the same arrays."""
    texts = ["Nike Men Black Running Shoes", "asdkjh qwpoeiru zxmcnv", ""]
    tx, tm, ix, im, _ = sample_tagger.features([Item(t) for t in texts])
    scores = sample_tagger.novelty(texts, tx, tm, ix, im)
    assert scores is not None
    assert scores.novel.tolist() == [False, True, False]
    assert np.isnan(scores.score[2]) and scores.reasons[2] is None  # no input: no verdict


def test_the_guard_is_in_the_artifact(sample_model: Path) -> None:
    manifest = read_manifest(sample_model)
    assert NOVELTY in manifest.files  # so the registry checksums and ships it
    assert manifest.novelty is not None and manifest.novelty["combine"] == "any present input"
    assert {"text", "image"} <= manifest.novelty["limits"].keys()
    assert (sample_model / NOVELTY).stat().st_size < 1_000_000


def test_the_registry_ships_and_checks_the_guard(sample_model: Path, settings: Settings,
                                                 tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    uri, checks = publish_artifact(store, sample_model)
    assert NOVELTY in checks["files"]
    tagger = Tagger.load(fetch_artifact(store, uri, tmp_path / "cache"), settings=settings)
    assert tagger.guard is not None
    key = f"{artifact_prefix(read_manifest(sample_model).version)}/{NOVELTY}"
    (store.root / key).chmod(0o644)
    (store.root / key).write_bytes(b"not the published guard")
    with pytest.raises(ArtifactError, match=NOVELTY):
        fetch_artifact(store, uri, tmp_path / "again")


def test_an_artifact_without_a_guard_loads_and_never_abstains(
        sample_model: Path, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    old = load_artifact(sample_model)
    old.manifest.pop("novelty")
    old.novelty = None
    old.manifest["version"] += "-unguarded"
    folder = save_artifact(tmp_path / "old", old)
    assert not (folder / NOVELTY).exists()
    with caplog.at_level(logging.WARNING, logger="shared.ml.predictor"):
        tagger = Tagger.load(folder, settings=settings)
        Tagger.load(shutil.copytree(folder, tmp_path / "again"), settings=settings)
    assert tagger.guard is None
    assert sum("no novelty guard" in r.getMessage() for r in caplog.records) == 1  # said once
    (p,) = tagger.predict([Item("👗👠🔥✨")])
    assert p.novelty is None and p.abstain_reason is None


def test_text_signals_with_the_real_tokenizer(sample_tagger: Tagger) -> None:
    tok = sample_tagger.text_encoder.tokenizer
    unk = unknown_token_share(tok, ["👗👠🔥✨", "Summer Dress 👗", "Nike Men Shoes", ""])
    assert unk.tolist() == [1.0, pytest.approx(1 / 3), 0.0, 0.0]
    share, names = unseen_script_share(["महिलाओं कुर्ता", "Nike 2 Shoes", "Nike Кроссовки"],
                                       frozenset({"LATIN", "DIGIT"}))
    assert share[0] == 1.0 and names[0] == "DEVANAGARI"
    assert share[1] == 0.0 and 0.5 < share[2] < 1.0 and names[2] == "CYRILLIC"


def test_limit_is_the_calibration_quantile_on_synthetic_clusters(sample_tagger: Tagger) -> None:
    rng = np.random.default_rng(0)
    dims, centres = 32, rng.normal(size=(6, 32))

    def draw(n: int, at: np.ndarray = centres) -> np.ndarray:
        return (at[rng.integers(len(at), size=n)] + 0.15 * rng.normal(size=(n, dims))).astype(np.float32)

    ref, stats = fit_reference("text", draw(3000), draw(2000), max_centroids=24)
    assert ref is not None and len(ref.centroids) == 24 and stats["calibration_n"] == 2000
    assert np.allclose(np.linalg.norm(ref.centroids, axis=1), 1.0, atol=1e-3)
    fresh = ref.distance(draw(4000)) >= ref.limit
    assert 0.001 <= fresh.mean() <= 0.015  # the 99.5th percentile: ~0.5% of in-domain items
    assert (ref.distance(draw(500, rng.normal(size=(3, dims)))) >= ref.limit).all()  # elsewhere
    few, _ = fit_reference("text", draw(10), draw(20))
    assert few is not None and len(few.centroids) == 10  # no more rows than centroids: the rows
    assert fit_reference("text", draw(100), draw(5))[0] is None  # too few to set a limit
    x = draw(50)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(spherical_kmeans(unit, 64), unit)

    # A whole guard on synthetic features round-trips through its manifest document and arrays.
    n = 400
    feats = Features(draw(n), np.ones(n, bool), np.abs(draw(n)), rng.random(n) > 0.2)
    texts = [f"Brand {k} Men Shirt" for k in range(n)]
    parts = {"train": np.arange(250), "calibration": np.arange(250, 400)}
    guard = fit_guard(feats, parts, texts, sample_tagger.text_encoder.tokenizer, image_dims=20)
    assert guard.refs["image"].dims == 20 and guard.scripts == {"LATIN", "DIGIT"}
    assert guard.stats["calibration_flagged"] <= 0.05
    again = NoveltyGuard.from_artifact(guard.to_json(), guard.arrays())
    args = (texts[:50], feats.text[:50], feats.text_mask[:50], feats.image[:50], feats.image_mask[:50],
            sample_tagger.text_encoder.tokenizer)
    assert np.array_equal(guard.score(*args).score, again.score(*args).score)
