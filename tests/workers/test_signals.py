"""Model loading at worker start: once, in the process that runs the tasks, never before a fork."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.thread import TaskPool as ThreadPool

from shared.config import Settings
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
    monkeypatch.setattr(signals, "_load_or_exit", lambda: calls.append("load"))
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
