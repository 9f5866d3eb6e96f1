"""The fine-tuned image tail (issue 12, point 5): the backbone's last block and head conv trained on
the labels over frozen maps. The tail over the frozen maps is the backbone, a model trained with a
tail stores it, reloads it and serves the features it was calibrated on, its encoder id (the
embedding cache's key) names it, and models without one load as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from shared.config import Settings
from shared.errors import ArtifactError
from shared.ml.image_encoder import ImageEncoder
from shared.ml.image_tuning import Tail, _stem, tail_prefixes
from shared.ml.train_config import TrainConfig, config_problems

EPOCHS = 2


def test_the_tail_over_frozen_maps_is_the_backbone(settings: Settings) -> None:
    enc = ImageEncoder.from_settings(settings)
    x = torch.randn(3, 3, 224, 224)
    with torch.inference_mode():
        want = enc.model(x)
        for blocks in (0, 1, 2):
            first = len(enc.model.blocks) - blocks
            got = Tail(enc.model, blocks).eval()(_stem(enc.model, first, x))
            assert torch.allclose(got, want, atol=1e-5), blocks
            names = set(Tail(enc.model, blocks).state())
            assert names and all(n.startswith(tail_prefixes(enc.model, blocks)) for n in names)
            assert names <= set(enc.model.state_dict())


def test_a_tail_changes_the_encoder_id_and_a_foreign_one_is_refused(settings: Settings) -> None:
    base = ImageEncoder.from_settings(settings)
    state = Tail(base.model, 1).state()
    state["conv_head.weight"] = state["conv_head.weight"] * 1.01
    tuned = ImageEncoder.from_settings(settings, tail=state)
    assert base.tail_digest is None and "+tail:" not in base.encoder_id
    assert tuned.encoder_id == f"{base.encoder_id}+tail:{tuned.tail_digest}"
    assert torch.equal(tuned.model.state_dict()["conv_head.weight"], state["conv_head.weight"])
    with pytest.raises(ArtifactError, match="shape"):
        ImageEncoder.from_settings(settings, tail={"conv_head.weight": torch.zeros(2, 2, 1, 1)})
    with pytest.raises(ArtifactError, match="not a tensor"):
        ImageEncoder.from_settings(settings, tail={"head.fc.weight": torch.zeros(2)})


def test_config_problems_refuse_a_negative_tail() -> None:
    assert "image_tail_epochs" in config_problems(TrainConfig(image_tail_epochs=-1))
    assert "image_tail_lr" in config_problems(TrainConfig(image_tail_epochs=1, image_tail_lr=0))
    assert "image_tail_blocks" in config_problems(TrainConfig(image_tail_blocks=3))
    assert not config_problems(TrainConfig(image_tail_epochs=3))
    assert TrainConfig().image_tail_epochs is None  # chosen by the catalogue


def test_only_a_photo_only_catalogue_tunes_the_tail_by_default() -> None:
    from shared.ml.dataset import Record
    from shared.ml.train_config import PHOTO_ONLY_TAIL_EPOCHS, image_tail_epochs_choice

    photos = [Record("a", "", "a.jpg", {}), Record("b", " ", "b.jpg", {})]
    titled = [Record("a", "", "a.jpg", {}), Record("b", "red dress", "b.jpg", {})]
    assert image_tail_epochs_choice(None, photos, [b"x", b"y"]) == PHOTO_ONLY_TAIL_EPOCHS
    assert image_tail_epochs_choice(None, titled, [b"x", b"y"]) == 0  # one title is enough
    assert image_tail_epochs_choice(None, photos, [None, None]) == 0  # no photo came: nothing to tune
    assert image_tail_epochs_choice(0, photos, [b"x", b"y"]) == 0  # the option wins
    assert image_tail_epochs_choice(2, titled, [b"x", b"y"]) == 2


@pytest.fixture(scope="module")
def tail_model(tmp_path_factory: pytest.TempPathFactory, settings: Settings,
               sample_manifest: Path) -> tuple[Path, Path]:
    """A small model of the sample catalogue trained with the image tail, and the probabilities
    its training computed for the validation part."""
    from shared.ml.head_training import HeadTrainConfig
    from shared.ml.training import prepare, train_prepared

    out = tmp_path_factory.mktemp("tail-model")
    cfg = TrainConfig(calibration_fraction=0.2, validation_fraction=0.2, finetune_text=False,
                      calibration_folds=2, image_tail_epochs=EPOCHS, head=HeadTrainConfig(epochs=8))
    data = prepare(sample_manifest, cfg, settings=settings)
    scores = out / "scores.npz"
    train_prepared(data, out / "model", settings=settings, cfg=cfg, show_progress=False,
                   scores_out=scores)
    return out / "model", scores


def test_a_model_trained_with_the_tail_saves_loads_and_serves_what_it_was_calibrated_on(
    tail_model: tuple[Path, Path], settings: Settings, sample_manifest: Path,
) -> None:
    from shared.ml.dataset import load_blobs, load_manifest, load_records
    from shared.ml.predictor import Item, Tagger

    model, scores = tail_model
    m = json.loads((model / "manifest.json").read_text())
    tail = m["encoders"]["image"]["tail"]
    assert "image_tail.safetensors" in m["files"] and m["training"]["config"]["image_tail_epochs"] == EPOCHS
    assert m["encoders"]["image"]["id"].endswith(f"+tail:{tail['digest']}")
    assert len(tail["training"]["loss"]) == EPOCHS and "image_tail_s" in m["training"]["timings_s"]
    # Honest calibration: every cross-fitted fold tuned a tail of its own.
    assert len(m["training"]["calibration"]["image_tails"]) == m["training"]["calibration"]["k"] == 2
    stored = load_file(str(model / "image_tail.safetensors"))
    pretrained = ImageEncoder.from_settings(settings)
    assert not torch.equal(stored["conv_head.weight"], pretrained.model.state_dict()["conv_head.weight"])

    tagger = Tagger.load(model, settings=settings)
    assert tagger.image_encoder.tail_digest == tail["digest"] != pretrained.tail_digest
    assert tagger.image_encoder.encoder_id != pretrained.encoder_id  # the cache keeps them apart
    # The reloaded model's probabilities on the validation part are those training computed.
    want = np.load(scores)
    val = want["validation_idx"]
    ds = load_manifest(sample_manifest)
    recs = load_records(ds)
    blobs = load_blobs(ds, recs)
    items = [Item(recs[i].text, blobs[i]) for i in val]
    tx, tm, ix, im, _ = tagger.features(items)
    assert im.all()
    probs = tagger.probabilities(tx, tm, ix, im)
    for name in m["axes"]:
        assert np.allclose(probs[name], want[f"val_probs:{name}"], atol=1e-4), name
    frozen, _ = pretrained.encode([it.image for it in items[:4]])
    assert not np.allclose(frozen[:, :pretrained.backbone_dim], ix[:4, :pretrained.backbone_dim], atol=1e-3)
    assert np.array_equal(frozen[:, pretrained.backbone_dim:], ix[:4, pretrained.backbone_dim:])  # colour
    preds = tagger.predict(items[:5])
    assert all(p.error is None for p in preds)
    again = Tagger.load(model, settings=settings).predict(items[:5])
    assert [p.tags for p in again] == [p.tags for p in preds]


def test_a_tail_that_is_not_the_trained_one_is_refused(
    tail_model: tuple[Path, Path], settings: Settings, tmp_path: Path,
) -> None:
    from shared.ml.predictor import Tagger

    bad = tmp_path / "m"
    shutil.copytree(tail_model[0], bad)
    state = load_file(str(bad / "image_tail.safetensors"))
    state["conv_head.weight"] = state["conv_head.weight"] + 0.01
    save_file(state, str(bad / "image_tail.safetensors"))
    with pytest.raises(ArtifactError, match="needs image encoder"):
        Tagger.load(bad, settings=settings)
    (bad / "image_tail.safetensors").unlink()
    with pytest.raises(ArtifactError, match="image_tail.safetensors"):
        Tagger.load(bad, settings=settings)


def test_a_model_without_a_tail_loads_the_pretrained_backbone(settings: Settings) -> None:
    from shared.ml.predictor import Tagger

    tagger = Tagger.load(settings=settings)  # the shipped model
    assert tagger.artifact.image_tail is None and tagger.image_encoder.tail_digest is None
    assert "tail" not in tagger.manifest["encoders"]["image"]
    assert "image_tail.safetensors" not in tagger.manifest["files"]
    assert tagger.image_encoder.encoder_id == ImageEncoder.from_settings(settings).encoder_id
