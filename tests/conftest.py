"""Shared fixtures: settings isolated per test session, one model trained on the sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # any attempt to reach a model hub must fail loudly
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from shared.config import SAMPLE_MANIFEST, Settings  # noqa: E402


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(cache_dir=tmp_path_factory.mktemp("cache"), device="cpu")


@pytest.fixture(scope="session")
def sample_manifest() -> Path:
    return SAMPLE_MANIFEST


@pytest.fixture(scope="session")
def sample_model(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Path:
    """A real model trained on the committed 200-product sample (about a minute on 2 cores)."""
    from shared.ml.head_training import HeadTrainConfig
    from shared.ml.training import TrainConfig, train

    out = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(calibration_fraction=0.2, validation_fraction=0.2, text_epochs=3,
                      head=HeadTrainConfig(epochs=40))
    train(SAMPLE_MANIFEST, out, settings=settings, cfg=cfg, show_progress=False)
    return out


@pytest.fixture(scope="session")
def sample_tagger(sample_model: Path, settings: Settings):
    from shared.ml.predictor import Tagger

    return Tagger.load(sample_model, settings=settings)
