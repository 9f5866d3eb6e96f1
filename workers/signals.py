"""Worker start-up: load the model once per process, after any fork, and exit if it cannot."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery.signals import celeryd_after_setup, worker_init, worker_process_init, worker_ready

log = logging.getLogger("workers.signals")


def _app_settings(app: Any) -> Any:
    """The settings the worker's app was built with (``workers.app.TaggerCelery``), else None: the
    environment's. Read off the app, not imported: workers.app imports this module to connect it."""
    return getattr(app, "tagger_settings", None)


def _load_or_exit(app: Any) -> None:
    """Load the tagging model with the settings of the worker's ``app``."""
    from workers.tagging import load_runtime

    try:
        load_runtime(_app_settings(app))
    except Exception:
        log.exception("model_load_failed")
        # A worker without a model would ack nothing and hold its prefetched messages.
        os._exit(3)
    from shared.metrics import start_worker_server
    from workers.readiness import readiness
    from workers.tagging import runtime

    s = runtime().settings
    start_worker_server(s.metrics_port, s.metrics_host, readiness)  # nothing when no port is set


def _is_prefork(worker: Any) -> bool:
    """Whether the worker forks children (``-P prefork``); ``pool_cls`` may still be a name here."""
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    cls = getattr(worker, "pool_cls", None)
    try:
        impl = get_implementation(cls) if cls else None
    except (ImportError, KeyError, AttributeError):
        return False
    return isinstance(impl, type) and issubclass(impl, TaskPool)


@worker_init.connect
def _load_in_embedded_worker(sender: Any = None, **_kwargs: Any) -> None:
    """An embedded worker (the demo's, tests') has no ``celeryd_after_setup``: load here."""
    from celery.apps.worker import Worker

    if not isinstance(sender, Worker) and not _is_prefork(sender):
        _load_or_exit(getattr(sender, "app", None))


def serves_tagging(app: Any) -> bool:
    """Whether this worker consumes the tagging queue (``-Q``; no ``-Q``: every queue). A training
    worker never tags: loading and warming the tagging model there only costs memory and start time."""
    from shared.config import get_settings

    settings = _app_settings(app) or get_settings()
    return settings.tagging_queue in set(app.amqp.queues.consume_from)


@celeryd_after_setup.connect
def _load_in_main_process(sender: Any = None, instance: Any = None, **_kwargs: Any) -> None:
    """``celery worker`` with threads/solo: tasks run in this process, so load here. This signal
    comes after logging is set up (``worker_init`` comes before it and would lose the log line)
    and before the consumer starts."""
    if _is_prefork(instance):
        return
    if serves_tagging(instance.app):
        _load_or_exit(instance.app)
    else:
        log.info("model_not_loaded reason=no_tagging_queue queues=%s",
                 ",".join(sorted(instance.app.amqp.queues.consume_from)))


@worker_process_init.connect
def _load_in_child(**_kwargs: Any) -> None:
    """prefork: each child loads its own copy after the fork (CUDA does not survive a fork)."""
    from celery import current_app

    _load_or_exit(current_app)


@worker_ready.connect
def _warm_pool_threads(sender: Any = None, **_kwargs: Any) -> None:
    """threads pool: warm each pool thread (see :func:`workers.hotswap.warm_threads`) in the
    background; logs ``pool_warmed`` when done. Other pools run tasks in the loading thread."""
    from concurrent.futures import wait

    from workers import tagging
    from workers.hotswap import warm_threads

    pool = getattr(sender, "pool", None)
    executor, threads, rt = getattr(pool, "executor", None), getattr(pool, "limit", 0), tagging._runtime
    if executor is None or not threads or rt is None:
        return
    t0 = time.perf_counter()
    futures = warm_threads(executor, threads, rt.tagger, rt.settings.batch_size)

    def report() -> None:
        done, _ = wait(futures)
        failed = [f.exception() for f in done if f.exception() is not None]
        if failed:
            log.warning("pool_warm_failed threads=%d error=%s", threads, failed[0])
        else:
            log.info("pool_warmed threads=%d ms=%d", threads, (time.perf_counter() - t0) * 1000)

    threading.Thread(target=report, name="pool-warm-report", daemon=True).start()
