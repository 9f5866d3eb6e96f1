"""Model loading at worker start: once, in the process that runs the tasks, never before a fork."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.thread import TaskPool as ThreadPool

from shared.config import Settings
from tests.workers.procs import REPO, wait_for
from workers import signals
from workers.app import transport_options


@pytest.mark.parametrize(("pool", "prefork"), [
    ("prefork", True), ("processes", True), (PreforkPool, True),
    ("threads", False), ("solo", False), (ThreadPool, False), (None, False),
])
def test_is_prefork_understands_names_and_classes(pool: object, prefork: bool) -> None:
    assert signals._is_prefork(SimpleNamespace(pool_cls=pool)) is prefork


def test_an_embedded_worker_loads_in_worker_init_unless_it_forks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(signals, "_load_or_exit", lambda app: calls.append("load"))
    signals._load_in_embedded_worker(sender=SimpleNamespace(pool_cls="prefork"))
    assert calls == []  # the parent must not touch CUDA before forking
    signals._load_in_embedded_worker(sender=SimpleNamespace(pool_cls="threads"))
    assert calls == ["load"]


def test_short_visibility_timeout_sweeps_often() -> None:
    short = transport_options(Settings(visibility_timeout_s=5))
    assert (short["unacked_restore_interval"], short["unacked_restore_throttle"]) == (1, 1)
    assert short["unacked_mutex_expire"] == 30
    default = transport_options(Settings())
    assert (default["visibility_timeout"], default["unacked_restore_interval"]) == (3600, 10)


def test_a_training_worker_does_not_load_the_tagging_model(
    make_redis: Callable, make_db: Callable, worker_env: Callable, tmp_path: Path,
) -> None:
    """A real ``celery worker -Q training``: ready without loading (or warming) the tagging model."""
    redis = make_redis()
    env = worker_env(redis, make_db())
    log = tmp_path / "trainer.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "training", "-P", "threads",
             "-c", "2", "--loglevel=INFO", "--without-gossip", "--without-mingle", "-n", "trainer@%h"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is None and " ready." in log.read_text(), 120, "the training worker")
        text = log.read_text()
        assert "model_not_loaded reason=no_tagging_queue queues=training" in text, text[-3000:]
        assert "model_loaded" not in text and "pool_warmed" not in text
    finally:
        proc.terminate()
        proc.wait(30)
