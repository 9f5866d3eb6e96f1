"""The retraining loop end to end on real Postgres, S3 (moto) and a real worker process:
labels -> retrain -> gate -> registry -> hot swap -> new events carry the new version."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.config import DEFAULT_MODEL_DIR, SAMPLE_MANIFEST, Settings
from shared.db.session import session_scope
from shared.ml.head_training import HeadTrainConfig
from shared.ml.training import TrainConfig, train
from tests.workers.db import Db
from tests.workers.procs import wait_for
from tests.workers.stack import S3, S3_ENV, event

MODELS = "tagger-models"
FAST = TrainConfig(calibration_fraction=0.2, text_epochs=2, head=HeadTrainConfig(epochs=30))


@pytest.fixture()
def loop_settings(s3: S3, settings: Settings, make_db: Callable[..., str], tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Settings:
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    if MODELS not in [b["Name"] for b in s3.client.list_buckets()["Buckets"]]:
        s3.client.create_bucket(Bucket=MODELS)
    return Settings(
        database_url=make_db(), object_store_url=f"s3://{MODELS}/{tmp_path.name}",
        s3_endpoint_url=s3.client.meta.endpoint_url, cache_dir=settings.cache_dir, device="cpu",
        allow_file_uris=True, eval_fraction=0.2, batch_size=8,
    )


def _import_sample_labels(s: Settings, tmp_path: Path) -> None:
    from shared.labels.imports import import_labels

    with session_scope(s.database_url) as session:
        summary = import_labels(session, SAMPLE_MANIFEST, image_dir=tmp_path / "label-images")
    assert summary.imported == 200


def _register(s: Settings, model_dir: Path, status: str) -> str:
    from shared.registry import register
    from shared.storage import open_store

    with session_scope(s.database_url) as session:
        return register(session, open_store(s.object_store_url, s), model_dir, status=status).version


def _versions(s: Settings) -> dict[str, dict]:
    db = Db(s.database_url)
    try:
        return {r["version"]: r for r in db.rows("SELECT * FROM model_versions")}
    finally:
        db.close()


def _weak_model(s: Settings, tmp_path: Path) -> Path:
    """A deliberately useless champion: frozen text, a head that barely moved from random."""
    out = tmp_path / "weak"
    cfg = TrainConfig(calibration_fraction=0.2, validation_fraction=0.2, finetune_text=False,
                      head=HeadTrainConfig(epochs=1, lr=1e-7))
    train(SAMPLE_MANIFEST, out, settings=s, cfg=cfg, show_progress=False)
    m = json.loads((out / "manifest.json").read_text())
    m["version"] = "weak-" + m["version"]
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def test_labels_retrain_promote_and_a_running_worker_swaps(
    loop_settings: Settings, tmp_path: Path, make_redis: Callable, worker_env: Callable,
    start_worker: Callable,
) -> None:
    from shared.publish import Publisher
    from workers.retraining import run_retrain

    s = loop_settings
    weak = _register(s, _weak_model(s, tmp_path), status="live")
    _import_sample_labels(s, tmp_path)

    redis = make_redis()
    env = worker_env(redis, s.database_url, object_store_url=s.object_store_url,
                     s3_endpoint_url=s.s3_endpoint_url, allow_file_uris="true")
    env.update(S3_ENV)
    worker = start_worker("swap", env)
    assert f"to={weak}" in worker.log()  # at start it serves the registry's live model

    result = run_retrain(s, reason="test", cfg=FAST)
    assert result["status"] == "promoted", result
    new = result["version"]
    rows = _versions(s)
    assert rows[new]["status"] == "live" and rows[new]["parent_version"] == weak
    assert rows[weak]["status"] == "retired"
    gate = rows[new]["metrics"]["gate"]
    assert gate["decision"]["promote"] and gate["n_eval"] == result["n_eval"] > 0
    assert set(gate["champion"]) == set(gate["challenger"])
    assert rows[new]["label_watermark"] is not None

    db = Db(s.database_url)
    try:
        with Publisher(redis.url) as pub:
            def new_version_seen() -> bool:
                pub.publish([event(title="Nike Men Blue Running Shoes")])
                time.sleep(1.0)
                found = db.rows("SELECT count(*) AS n FROM tagging_events WHERE model_version = :v", v=new)
                return found[0]["n"] > 0

            wait_for(new_version_seen, 120, "an event tagged by the promoted model", every=0.5)
        assert f"model_swapped from={weak} to={new}" in worker.log()
        tagged = db.rows("SELECT DISTINCT model_version FROM product_tags WHERE source = 'model'")
        assert new in {r["model_version"] for r in tagged}
    finally:
        db.close()


def test_worse_challenger_is_rejected_and_two_triggers_train_once(
    loop_settings: Settings, tmp_path: Path,
) -> None:
    from workers.retraining import run_retrain

    s = loop_settings
    _import_sample_labels(s, tmp_path)  # the champion becomes the shipped model (registered on first use)
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(run_retrain(s, "test", FAST)))
               for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.5)
    for t in threads:
        t.join(timeout=600)
    statuses = sorted(r["status"] for r in results)
    assert statuses == ["rejected", "skipped"], results
    rejected = next(r for r in results if r["status"] == "rejected")
    assert "worse beyond tolerance" in rejected["reason"]
    rows = _versions(s)
    live = [v for v, r in rows.items() if r["status"] == "live"]
    default = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())["version"]
    assert live == [default]
    assert rows[rejected["version"]]["status"] == "rejected"
    assert rows[rejected["version"]]["reason"].startswith("worse beyond tolerance")


def test_a_corrupt_live_artifact_is_never_swapped_in(loop_settings: Settings, tmp_path: Path,
                                                     model_dir: Path, s3: S3) -> None:
    import sqlalchemy as sa

    from shared.db.models import ModelVersion
    from shared.fetch import ImageFetcher
    from shared.ml.predictor import Tagger
    from workers.hotswap import ModelWatcher
    from workers.tagging import Runtime

    s = loop_settings
    bad_dir = shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "bad")
    m = json.loads((bad_dir / "manifest.json").read_text())
    m["version"] = "corrupt-" + m["version"]
    (bad_dir / "manifest.json").write_text(json.dumps(m))
    version = _register(s, bad_dir, status="candidate")
    key = f"{tmp_path.name}/models/{version}/head.safetensors"
    head = s3.client.get_object(Bucket=MODELS, Key=key)["Body"].read()
    s3.client.put_object(Bucket=MODELS, Key=key, Body=head[: len(head) // 2])  # truncated behind our back
    with session_scope(s.database_url) as session:  # as if an operator forced it live by hand
        session.execute(sa.update(ModelVersion).where(ModelVersion.version == version).values(status="live"))

    serving = Tagger.load(model_dir, settings=s)
    rt = Runtime(settings=s, tagger=serving, fetcher=ImageFetcher(s))
    watcher = ModelWatcher(rt)
    watcher.sync_now()
    assert rt.tagger is serving  # still the old model
    assert version in watcher._failed
