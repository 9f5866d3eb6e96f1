"""The tasks the workers register are the ones :mod:`shared.tasks` declares, with its options, and the
app reads its settings only when first used, from the settings it was given."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import workers.tasks  # noqa: F401  (what a worker imports at start: its app's ``include``)
from shared.config import Settings
from shared.tasks import TAG_PRODUCT, TASKS, task_routes
from tests.workers.procs import REPO
from workers.app import app as module_app
from workers.app import create_app, settings_of
from workers.schedule import beat_schedule


def test_every_declared_task_is_registered_with_its_options() -> None:
    s = Settings(batch_size=7, flush_interval_s=0.5, tagging_queue="tq", training_queue="rq")
    app = create_app(s)
    try:
        for spec in TASKS:
            task = app.tasks[spec.name]
            assert (task.acks_late, task.ignore_result) == (spec.acks_late, True), spec.name
        assert app.conf.task_routes == task_routes(s)
        assert app.conf.task_routes[TAG_PRODUCT.name] == {"queue": "tq"}
        assert app.conf.beat_schedule == beat_schedule(s)
        assert app.conf.broker_url == s.broker_url
        batch = app.tasks[TAG_PRODUCT.name]
        assert (batch.flush_every, batch.flush_interval) == (7, 0.5)  # from the app's settings
        assert settings_of(app) is s
    finally:
        app.close()
        module_app.set_current()


def test_beat_names_only_registered_tasks_on_their_declared_queues() -> None:
    s = Settings(training_queue="rq")
    names = {spec.name: spec for spec in TASKS}
    for entry in beat_schedule(s).values():
        assert entry["task"] in names and entry["task"] in module_app.tasks
        assert entry["options"]["queue"] == names[entry["task"]].queue_name(s) == "rq"


def test_importing_the_workers_reads_no_settings() -> None:
    """An unusable setting breaks nothing at import; it is reported when the app is first used."""
    code = textwrap.dedent("""
        import workers.app, workers.tasks
        try:
            workers.app.app.conf.broker_url
        except Exception as exc:
            print("configured on first use:", type(exc).__name__)
    """)
    env = {"TAGGER_BATCH_SIZE": "not-a-number", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "configured on first use: ValidationError" in proc.stdout
