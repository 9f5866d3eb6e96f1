"""Head ensembles (``--head-ensemble``): the mean of heads trained with seeds seed, seed + 1, …;
one member is exactly the single head, the state round-trips, and a model trained with one
calibrates, saves, loads and predicts through the real path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from shared.config import Settings
from shared.ml.head import HeadEnsemble
from shared.ml.head_training import Features, HeadTrainConfig, train_head
from shared.ml.labels import Axis
from shared.ml.predictor import Tagger, build_head
from shared.ml.train_config import config_problems
from tests.shared.ml.test_lexical import shipped_items

AXES = [Axis("a", "single", ["x", "y", "z"]), Axis("b", "single", ["p", "q"])]


def features(n: int, seed: int) -> tuple[Features, dict[str, np.ndarray]]:
    """Text decides axis a, the photo axis b (with some noise), so a head has something to learn."""
    rng = np.random.default_rng(seed)
    text, image = rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(n, 6)).astype(np.float32)
    y = {"a": np.digitize(text[:, 0], [-0.4, 0.4]),
         "b": (image[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int)}
    return Features(text, np.ones(n, bool), image, np.ones(n, bool)), y


def fit(members: int) -> tuple[torch.nn.Module, dict]:
    (tr, ytr), (va, yva) = features(400, 0), features(100, 1)
    cfg = HeadTrainConfig(hidden=16, epochs=4, patience=2, batch_size=64, seed=3, members=members)
    return train_head(AXES, tr, ytr, va, yva, cfg, torch.device("cpu"), show_progress=False)


def test_an_ensemble_is_the_mean_of_its_members_and_its_first_member_is_the_single_head() -> None:
    single, _ = fit(1)
    ens, log = fit(3)
    assert isinstance(ens, HeadEnsemble) and ens.cfg.members == 3 and len(log["members"]) == 3
    assert log["epochs_run"] == sum(m["epochs_run"] for m in log["members"])
    x = features(50, 2)[0].tensors(np.arange(50), torch.device("cpu"))
    with torch.no_grad():
        out, one = ens(*x), single(*x)
        each = [m(*x) for m in ens.members]
    assert torch.equal(each[0]["a"], one["a"])  # seed 3: the head --head-ensemble 1 would train
    assert not torch.allclose(each[1]["a"], each[0]["a"])  # seed 4: another head
    for a in ("a", "b"):
        assert torch.allclose(out[a], sum(e[a] for e in each) / 3, atol=1e-6)
    gates = ens.gate_weights(*x)
    assert torch.allclose(gates["b"], sum(m.gate_weights(*x)["b"] for m in ens.members) / 3, atol=1e-6)
    assert torch.allclose(gates["b"].sum(-1), torch.ones(50))


def test_an_ensembles_state_round_trips_through_its_file(tmp_path: Path) -> None:
    ens, _ = fit(2)
    state = ens.export_state()
    assert {k.split(".")[1] for k in state} == {"0", "1"} and all(k.startswith("members.") for k in state)
    save_file(state, str(tmp_path / "head.safetensors"))
    again = build_head({"head": {"config": ens.cfg.to_json()}}, load_file(str(tmp_path / "head.safetensors")))
    assert isinstance(again, HeadEnsemble)
    x = features(20, 5)[0].tensors(np.arange(20), torch.device("cpu"))
    with torch.no_grad():
        assert all(torch.equal(again(*x)[a], ens(*x)[a]) for a in ("a", "b"))
    one = {"head": {"config": {**ens.cfg.to_json(), "members": 1}}}
    with pytest.raises(Exception, match="do not match"):  # a single head's shape refuses the state
        build_head(one, state)


def test_head_ensemble_must_be_at_least_one() -> None:
    from cli.model import train_config

    assert "head_ensemble" in config_problems(train_config(head_ensemble=0))
    assert "head_ensemble" not in config_problems(train_config(head_ensemble=2))
    assert train_config().head.members == 1  # one head unless asked


def test_a_model_trained_with_an_ensemble_calibrates_saves_loads_and_predicts(
    tmp_path: Path, settings: Settings, sample_manifest: Path,
) -> None:
    from shared.ml.training import TrainConfig, train

    cfg = TrainConfig(calibration_fraction=0.2, validation_fraction=0.2, finetune_text=False,
                      calibration_folds=2, head=HeadTrainConfig(epochs=6, members=2))
    train(sample_manifest, tmp_path, settings=settings, cfg=cfg, show_progress=False)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["head"]["config"]["members"] == 2
    assert m["training"]["config"]["head"]["members"] == 2  # a retrain trains an ensemble too
    assert m["training"]["calibration"]["method"] == "cross-fit"
    assert len(m["training"]["head_log"]["members"]) == 2
    tagger = Tagger.load(tmp_path, settings=settings)
    assert isinstance(tagger.head, HeadEnsemble)
    items = shipped_items(sample_manifest)
    preds = tagger.predict(items)
    assert all(p.error is None and p.tags for p in preds)
    for p in preds:
        for ev in p.evidence.values():
            assert ev["shares"]["title"] + ev["shares"]["photo"] == pytest.approx(1, abs=2e-4)
    assert [p.tags for p in tagger.predict(items)] == [p.tags for p in preds]
