"""The label trigger of the retraining loop on real Postgres and Redis: how many human labels are
waiting since the live model's watermark, the ``tagger.check_new_labels`` decision that enqueues a
``tagger.retrain`` on the training queue, and the beat schedule that drives both."""

from __future__ import annotations

import base64
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery

from shared.config import DEFAULT_MODEL_DIR, SAMPLE_MANIFEST, Settings
from shared.db.session import session_scope
from tests.workers.procs import RedisServer

SAMPLE_LABELS = 1400  # confirmed human labels in the committed sample: 200 products x 7 axes


@pytest.fixture()
def redis(make_redis: Callable[..., RedisServer]) -> RedisServer:
    return make_redis()


@pytest.fixture()
def label_settings(make_db: Callable[..., str], redis: RedisServer, settings: Settings,
                   tmp_path: Path) -> Settings:
    """A fresh database, a private Redis and a local object store; the sample's labels not yet in."""
    return Settings(
        database_url=make_db(), broker_url=redis.url, object_store_url=f"file://{tmp_path / 'objects'}",
        cache_dir=settings.cache_dir, device="cpu", training_queue="training",
    )


def _import_sample_labels(s: Settings, tmp_path: Path) -> None:
    from shared.labels.imports import import_labels

    with session_scope(s.database_url) as session:
        summary = import_labels(session, SAMPLE_MANIFEST, image_dir=tmp_path / "label-images")
    assert summary.imported == 200 and not summary.refused, summary.refused[:3]


def _model(tmp_path: Path, tag: str) -> Path:
    """The shipped model under a version of its own (a registry version is written once)."""
    out = shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / f"model-{tag}")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["version"] = f"{tag}-{uuid.uuid4().hex[:8]}"
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _register_at_watermark(s: Settings, model: Path, status: str) -> str:
    """Register ``model`` with the label watermark as it is now (what a retrain records)."""
    from shared.labels.queries import label_watermark
    from shared.registry import register
    from shared.storage import open_store

    with session_scope(s.database_url) as session:
        mark = label_watermark(session)
        assert mark is not None
        return register(session, open_store(s.object_store_url, s), model, status=status,
                        label_watermark=mark).version


def _one_decision(s: Settings) -> None:
    from shared.labels.decisions import decide

    with session_scope(s.database_url) as session:
        product_id = session.scalar(sa.text("SELECT product_id FROM products ORDER BY product_id LIMIT 1"))
        assert decide(session, product_id, "baseColour", "Neon Lime", "reject") == {"Neon Lime": "rejected"}


def _retrain_messages(redis: RedisServer, queue: str) -> list[tuple[str, dict]]:
    """(task name, kwargs) of every message waiting in ``queue``."""
    found = []
    for raw in redis.client().lrange(queue, 0, -1):
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _args, kwargs, _embed = json.loads(body)
        found.append((message["headers"]["task"], kwargs))
    return found


@pytest.fixture()
def app(label_settings: Settings) -> Iterator[Celery]:
    """A Celery app of the workers' configuration on the test Redis (what beat and workers build)."""
    from workers.app import app as module_app
    from workers.app import create_app

    app = create_app(label_settings)
    yield app
    app.close()
    module_app.set_current()  # create_app made the test app the current one


def test_labels_waiting_follow_the_live_models_watermark(label_settings: Settings, tmp_path: Path) -> None:
    from workers.retraining import new_labels_waiting

    s = label_settings
    assert new_labels_waiting(s) == 0  # nothing labelled yet
    _import_sample_labels(s, tmp_path)
    assert new_labels_waiting(s) == SAMPLE_LABELS  # no model yet: every label is new

    _register_at_watermark(s, _model(tmp_path, "trained"), status="live")
    assert new_labels_waiting(s) == 0  # the live model saw every label

    _one_decision(s)
    assert new_labels_waiting(s) == 1

    _import_sample_labels(s, tmp_path)  # a re-import moves no label timestamp
    assert new_labels_waiting(s) == 1


def test_a_rejected_challengers_labels_do_not_trigger_again(label_settings: Settings, tmp_path: Path,
                                                           redis: RedisServer, app: Celery) -> None:
    """A challenger trained on every label and rejected by the gate leaves the live model's
    watermark where it was: counting from there, the check (every minute) would start the same
    retrain over and over. The labels it was trained on are not new any more."""
    from shared.registry import register
    from shared.storage import open_store
    from workers.retraining import new_labels_waiting, retrain_enqueuer, trigger_on_new_labels

    s = label_settings.model_copy(update={"retrain_min_new_labels": 1})
    with session_scope(s.database_url) as session:  # the shipped model, live, trained on no label
        register(session, open_store(s.object_store_url, s), _model(tmp_path, "shipped"), status="live")
    _import_sample_labels(s, tmp_path)
    assert new_labels_waiting(s) == SAMPLE_LABELS

    _register_at_watermark(s, _model(tmp_path, "worse"), status="rejected")
    assert new_labels_waiting(s) == 0
    assert trigger_on_new_labels(s, retrain_enqueuer(app, s)) == 0
    assert _retrain_messages(redis, s.training_queue) == []

    _one_decision(s)
    assert new_labels_waiting(s) == 1
    assert trigger_on_new_labels(s, retrain_enqueuer(app, s)) == 1
    assert _retrain_messages(redis, s.training_queue) == [("tagger.retrain", {"reason": "1 new labels"})]


def test_check_enqueues_a_retrain_on_the_training_queue_only_at_the_threshold(
    label_settings: Settings, tmp_path: Path, redis: RedisServer, app: Celery,
) -> None:
    from workers.retraining import retrain_enqueuer, trigger_on_new_labels

    _import_sample_labels(label_settings, tmp_path)

    below = label_settings.model_copy(update={"retrain_min_new_labels": SAMPLE_LABELS + 1})
    assert trigger_on_new_labels(below, retrain_enqueuer(app, below)) == SAMPLE_LABELS
    assert _retrain_messages(redis, "training") == []

    at = label_settings.model_copy(update={"retrain_min_new_labels": SAMPLE_LABELS})
    assert trigger_on_new_labels(at, retrain_enqueuer(app, at)) == SAMPLE_LABELS
    assert _retrain_messages(redis, "training") == [
        ("tagger.retrain", {"reason": f"{SAMPLE_LABELS} new labels"})]
    assert redis.client().llen("tagging") == 0  # never on the tagging queue

    # Once the live model has seen them, the check sends nothing more even at a threshold of 1.
    _register_at_watermark(label_settings, _model(tmp_path, "trained"), status="live")
    one = label_settings.model_copy(update={"retrain_min_new_labels": 1})
    assert trigger_on_new_labels(one, retrain_enqueuer(app, one)) == 0
    assert len(_retrain_messages(redis, "training")) == 1


def test_the_check_task_enqueues_through_the_workers_app(
    label_settings: Settings, tmp_path: Path, redis: RedisServer,
) -> None:
    """The task itself (its body run in process) on an app built with the test's settings: the
    wiring between the task, the settings of the app it runs in, and the decision."""
    import workers.tasks  # noqa: F401  (what a worker imports at start: its app's include)
    from shared.tasks import CHECK_NEW_LABELS
    from workers.app import app as module_app
    from workers.app import create_app

    _import_sample_labels(label_settings, tmp_path)
    for threshold in (1000, 2000):
        app = create_app(label_settings.model_copy(update={"retrain_min_new_labels": threshold}))
        try:
            assert app.tasks[CHECK_NEW_LABELS.name]() == SAMPLE_LABELS
        finally:
            app.close()
            module_app.set_current()
        # 1000 labels or more are waiting: one retrain; at 2000 the check sends nothing more.
        assert _retrain_messages(redis, "training") == [
            ("tagger.retrain", {"reason": f"{SAMPLE_LABELS} new labels"})]


def test_beat_schedule_runs_the_retrain_and_the_check_on_the_training_queue() -> None:
    import workers.tasks  # noqa: F401  (registers the tasks the schedule names)
    from shared.config import get_settings
    from workers.app import app
    from workers.schedule import beat_schedule

    s = Settings(retrain_interval_s=3600, training_queue="train-q")
    schedule = beat_schedule(s)
    retrain = next(e for e in schedule.values() if e["task"] == "tagger.retrain")
    assert retrain["schedule"] == 3600.0
    assert retrain["options"]["queue"] == "train-q"
    check = next(e for e in schedule.values() if e["task"] == "tagger.check_new_labels")
    assert check["options"]["queue"] == "train-q" and 0 < check["schedule"] <= 3600

    configured = app.conf.beat_schedule
    assert configured == beat_schedule(get_settings())
    for entry in configured.values():
        assert entry["task"] in app.tasks, f"beat names an unregistered task {entry['task']}"
        assert entry["options"]["queue"] == get_settings().training_queue
