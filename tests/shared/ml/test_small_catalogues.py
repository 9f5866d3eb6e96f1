"""Issue 12 (points 3, 6, 7): options for small catalogues, honest data warnings, quiet progress."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from shared.ml.dataset import DataWarning, Record, load_blobs, load_manifest, load_records
from shared.ml.labels import Axis, build_axes


def test_config_problems_name_the_field() -> None:
    from shared.ml.train_config import TrainConfig, config_problems

    assert config_problems(TrainConfig()) == {}
    bad = config_problems(TrainConfig(validation_fraction=0.5, calibration_fraction=0.45))
    assert list(bad) == ["validation_fraction"] and "95%" in bad["validation_fraction"]
    assert "calibration_fraction" in config_problems(TrainConfig(calibration_fraction=0))
    assert "min_value_count" in config_problems(TrainConfig(min_value_count=0))
    assert "near_duplicate_similarity" in config_problems(TrainConfig(near_duplicate_similarity=1.5))
    # With a holdout, the validation share is not drawn from the rows.
    assert config_problems(TrainConfig(validation_fraction=0.5, calibration_fraction=0.3), True) == {}


def test_a_recorded_config_is_the_one_trained_with() -> None:
    """Retraining trains the challenger with its champion's recorded recipe (workers/retraining)."""
    import json
    from dataclasses import asdict

    from shared.config import DEFAULT_MODEL_DIR
    from shared.ml.head_training import HeadTrainConfig
    from shared.ml.train_config import TrainConfig, recorded_config

    cfg = TrainConfig(finetune_text=False, text_experts=True, near_duplicate_similarity=0.8,
                      head=HeadTrainConfig(label_smoothing=0.0, lexical_buckets=1024, min_steps=7))
    doc = json.loads(json.dumps(asdict(cfg)))
    assert recorded_config(doc) == cfg
    doc["from_the_future"], doc["head"]["also_new"] = 1, 2  # unknown keys: ignored
    del doc["text_experts"]  # a key older models lack: today's default
    assert recorded_config(doc) == TrainConfig(**{**asdict(cfg), "head": cfg.head,
                                                   "text_experts": TrainConfig().text_experts})
    shipped = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())["training"]["config"]
    assert recorded_config(shipped).finetune_text is False  # the shipped model's frozen encoder


def test_rare_values_are_named_per_axis() -> None:
    from shared.ml.train_config import rare_values

    recs = [Record(str(i), "t", None, {"colour": [c], "size": ["XL"] if i == 0 else []})
            for i, c in enumerate(["red"] * 5 + ["blue", "green", "teal"])]
    train_idx = np.arange(7)  # "teal" only outside training
    kinds = {"colour": "single", "size": "single"}
    axes = build_axes([recs[i] for i in train_idx], kinds, min_count=2)
    dropped = rare_values(recs, train_idx, kinds, axes)
    assert dropped == {"colour": {"blue": 1, "green": 1, "teal": 0}, "size": {"XL": 1}}


def test_calibration_gaps_say_which_values_can_never_be_auto() -> None:
    from shared.ml.bounds import needed_for_auto
    from shared.ml.train_config import calibration_gaps

    assert needed_for_auto(0.98, 0.95) == 149  # the number docs/MODEL.md and calibration.py quote
    a = Axis("colour", "single", ["red", "blue", "teal"])
    a.evidence = {"red": {"auto": True, "proposed": 400}, "blue": {"auto": False, "proposed": 300},
                  "teal": {"auto": False, "proposed": 12}}
    b = Axis("size", "single", ["XL"], evidence={"XL": {"auto": False, "proposed": 3}})
    gaps = calibration_gaps([a, b], 0.98, 0.95)
    assert gaps["colour"] == {"auto_values": 1, "values": 3, "needed": 149, "too_few": ["teal"],
                              "not_precise": ["blue"]}
    assert gaps["size"]["auto_values"] == 0


def _write(tmp_path: Path, rows: list[tuple[str, str, str]], archive: bool = False) -> Path:
    (tmp_path / "t.csv").write_text("id,title,image,kind\n" + "".join(
        f"{i},{t},{img},k\n" for i, t, img in rows))
    extra = "images_archive: a.tar\n" if archive else ""
    (tmp_path / "d.yaml").write_text(
        f"name: d\ntable: t.csv\nid: id\ntext: title\nimage: image\n{extra}axes:\n  kind: single\n")
    return tmp_path / "d.yaml"


def test_missing_images_warn_once_with_counts(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    m = load_manifest(_write(tmp_path, [("1", "a", "a.jpg"), ("2", "b", "b.jpg"), ("3", "c", "c.jpg")]))
    with pytest.warns(DataWarning, match=r"2 of the 3 images named in column 'image' were not found"):
        blobs = load_blobs(m, load_records(m))
    assert blobs == [b"x", None, None]


def test_no_photos_at_all_warn(tmp_path: Path) -> None:
    m = load_manifest(_write(tmp_path, [("1", "a", "a.jpg"), ("2", "b", "b.jpg")]))
    with pytest.warns(DataWarning, match="none of the 2 images .* no images_archive"):
        load_blobs(m, load_records(m))
    m = load_manifest(_write(tmp_path, [("1", "a", ""), ("2", "b", "")]))
    with pytest.warns(DataWarning, match="empty in all 2 rows"):
        load_blobs(m, load_records(m))


def test_complete_photos_do_not_warn(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    m = load_manifest(_write(tmp_path, [("1", "a", "a.jpg")]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_blobs(m, load_records(m)) == [b"x"]


class _Encoder:
    def __init__(self, dim: int) -> None:
        self.dim, self.encoder_id, self.calls = dim, f"fake{dim}", 0

    def encode(self, items: list) -> np.ndarray:
        self.calls += 1
        return np.ones((len(items), self.dim), np.float32)


class _ImageEncoder(_Encoder):
    def encode(self, items: list):  # (vectors, errors), as ImageEncoder.encode
        return super().encode(items), [None] * len(items)


class _FakeTagger:
    """Just enough of shared.ml.predictor.Tagger for evaluate_records."""

    def __init__(self) -> None:
        self.version, self.cache, self.consistency = "fake", None, None
        self.axes = [Axis("kind", "single", ["k", "j"])]
        self.text_encoder, self.image_encoder = _Encoder(4), _ImageEncoder(3)

    def probabilities(self, text, text_mask, image, image_mask, lexical=None, offsets=None) -> dict:
        return {"kind": np.tile([0.9, 0.1], (len(text), 1))}

    def lexical(self, texts):
        return None  # no lexical channel

    def offsets(self, texts):
        return None  # no text experts

    def novelty(self, *args):
        return None

    def evidence(self, *args):
        class _E:
            def withheld(self) -> dict:
                return {}
        return _E()


@pytest.mark.parametrize(("modality", "texts", "images"), [("text", 1, 0), ("image", 0, 1), ("both", 1, 1)])
def test_modality_encodes_only_what_it_uses(modality: str, texts: int, images: int) -> None:
    from shared.ml.report import evaluate_records

    tagger = _FakeTagger()
    recs = [Record(str(i), f"title {i}", f"{i}.jpg", {"kind": ["k"]}) for i in range(5)]
    report = evaluate_records(tagger, "d", recs, [b"img%d" % i for i in range(5)], modality)
    assert (tagger.text_encoder.calls > 0, tagger.image_encoder.calls > 0) == (bool(texts), bool(images))
    assert report["axes"]["kind"]["accuracy"] == 1.0


def test_text_modality_does_not_read_photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.ml import report

    path = _write(tmp_path, [("1", "a", "a.jpg")])  # the photo is missing: text must not care
    monkeypatch.setattr(report, "load_blobs", lambda *a: pytest.fail("photos read for --modality text"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = report.evaluate_dataset(_FakeTagger(), path, "text", show_progress=False)
    assert out["n"] == 1


def test_log_progress_prints_periodic_plain_lines(capsys: pytest.CaptureFixture) -> None:
    from shared.ml.progress import LogProgress, progress

    now = [0.0]
    bar = LogProgress(100, "encode texts", clock=lambda: now[0])
    for _ in range(100):
        now[0] += 0.1
        bar.update(1)
    bar.set_postfix(loss="0.5")
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[0].startswith("encode texts: 10/100 item (10%)")
    assert lines[-1] == "encode texts: done, 100/100 item (100%), 10 s, loss=0.5"
    assert "\r" not in "".join(lines)
    slow = LogProgress(10**6, "tune", clock=lambda: now[0])  # few steps, but time passes
    now[0] += 31
    slow.update(1)
    assert capsys.readouterr().err.startswith("tune: 1/1000000 item (0%)")
    assert isinstance(progress(5, "x", show=True), LogProgress)  # stderr is not a terminal here
    progress(5, "x", show=False).update(5)
    assert capsys.readouterr().err == ""


def test_third_party_noise_is_quiet_but_ours_is_not() -> None:
    from transformers.utils import logging as hf_logging

    from shared.ml.quiet import ignore_third_party_warnings, quiet_third_party

    quiet_third_party()
    assert hf_logging.get_verbosity() == hf_logging.ERROR
    assert not hf_logging.is_progress_bar_enabled()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ignore_third_party_warnings()
        warnings.warn_explicit("theirs", FutureWarning, "x.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("torch's", DeprecationWarning, "y.py", 1, module="torch.amp")
        warnings.warn("ours", FutureWarning, stacklevel=1)  # from this module: still shown
        warnings.warn_explicit("a shared one", UserWarning, "z.py", 1, module="shared.ml.x")
    assert [str(w.message) for w in seen] == ["ours", "a shared one"]


def test_small_catalogues_train_for_enough_steps() -> None:
    """40 epochs of a few hundred items are a few hundred optimiser steps: the schedule scales up
    (at most 10x, patience alike) until min_steps fit, and leaves large catalogues alone."""
    from shared.ml.head_training import HeadTrainConfig, scaled_schedule

    cfg = HeadTrainConfig(epochs=40, patience=6, min_steps=2000)
    assert scaled_schedule(cfg, steps_per_epoch=117) == (40, 6)  # fashion-small: 4,680 steps
    assert scaled_schedule(cfg, steps_per_epoch=7) == (286, 43)  # product1m-zh-dev: 1,704 items
    assert scaled_schedule(cfg, steps_per_epoch=1) == (400, 60)  # capped at 10x
    assert scaled_schedule(HeadTrainConfig(epochs=40, patience=6), 1) == (40, 6)  # 0: off
