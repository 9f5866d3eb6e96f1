"""Whether this worker can do its work now: the model is loaded, the database and the object store answer.

A worker whose database is down keeps its batch (unacked), waits and probes; meanwhile it is not
ready (``/readyz`` answers 503, ``tagger_worker_database_up`` is 0), so an orchestrator or the ops
team sees why the queue grows, and it becomes ready again by itself when a probe succeeds.
"""

from __future__ import annotations

import logging
import threading
import time

import sqlalchemy as sa

from shared.db.faults import Fault, classify
from shared.db.session import get_engine
from shared.metrics import (
    outage_waits_total,
    register_worker_health,
    worker_database_up,
    worker_object_store_up,
)

log = logging.getLogger("workers.readiness")
register_worker_health()  # this process is a worker: export the database/object-store gauges

_lock = threading.Lock()
_state: dict[str, object] = {"model_loaded": False, "database_up": True, "database_down_since": None,
                             "object_store_up": True}


def mark_model_loaded() -> None:
    with _lock:
        _state["model_loaded"] = True


def mark_database(up: bool) -> None:
    """Record a write's or a probe's outcome (logs each change once)."""
    with _lock:
        was = _state["database_up"]
        _state["database_up"] = up
        if was and not up:
            _state["database_down_since"] = time.time()
            log.warning("database_unreachable worker_ready=false")
        elif up and not was:
            down = time.time() - float(_state["database_down_since"] or time.time())
            _state["database_down_since"] = None
            log.info("database_back worker_ready=true down_s=%.1f", down)
    worker_database_up.set(1 if up else 0)


def mark_object_store(up: bool) -> None:
    """Record whether the object store (s3:// photos) answered the last batch (logs each change)."""
    with _lock:
        was, _state["object_store_up"] = _state["object_store_up"], up
    worker_object_store_up.set(1 if up else 0)
    if was and not up:
        log.warning("object_store_unreachable worker_ready=false")
    elif up and not was:
        log.info("object_store_back worker_ready=true")


def readiness() -> tuple[bool, dict[str, object]]:
    """(ready, why) for ``/readyz``."""
    with _lock:
        state = dict(_state)
    return bool(state["model_loaded"] and state["database_up"] and state["object_store_up"]), state


def database_answers(url: str) -> bool:
    """One ``SELECT 1``: True when it answers; an infrastructure error is False, anything else raises."""
    try:
        with get_engine(url).connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except Exception as exc:
        if classify(exc) in (Fault.INFRA, Fault.RETRY):
            return False
        raise


def wait_for_database(url: str, backoff_max_s: float, max_wait_s: float) -> bool:
    """Block until the database answers (probing with doubling pauses up to ``backoff_max_s``); False
    after ``max_wait_s`` without an answer. Marks the worker not ready meanwhile."""
    mark_database(False)
    outage_waits_total.inc()
    deadline, pause = time.monotonic() + max_wait_s, 0.5
    while True:
        if database_answers(url):
            mark_database(True)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, backoff_max_s)
