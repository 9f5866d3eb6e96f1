"""Worker start-up: load the model once per process, after any fork, and exit if it cannot."""

from __future__ import annotations

import logging
import os

from celery.signals import worker_init, worker_process_init

log = logging.getLogger("workers.signals")


def _load_or_exit() -> None:
    from workers.tagging import load_runtime

    try:
        load_runtime()
    except Exception:
        log.exception("model_load_failed")
        # A worker without a model would ack nothing and hold its prefetched messages.
        os._exit(3)


@worker_init.connect
def _load_in_main_process(sender=None, **_kwargs) -> None:
    """Threads/solo pools run tasks in this process: load here (no fork follows)."""
    pool = getattr(getattr(sender, "pool_cls", None), "__module__", "") or ""
    if "prefork" not in pool:
        _load_or_exit()


@worker_process_init.connect
def _load_in_child(**_kwargs) -> None:
    """prefork: each child loads its own copy after the fork (CUDA does not survive a fork)."""
    _load_or_exit()
