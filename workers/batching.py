"""celery-batches, hardened for a broker that restarts.

celery-batches 0.11 arms its flush timer once (on the first message) and keeps the handle; when
the consumer reconnects, Celery clears its timer, the handle still looks armed, and buffered
requests are never flushed (celery-batches #99/#107). Buffered requests from the old connection
can no longer be acked either. So every time the consumer (re)builds its strategy we drop the
stale handle and the stale buffer: Redis redelivers those messages after the visibility timeout,
and the batch writes are idempotent.
"""

from __future__ import annotations

import logging
from itertools import count
from typing import Any

from celery_batches import Batches

log = logging.getLogger(__name__)


class ReliableBatches(Batches):
    abstract = True

    def Strategy(self, task: Any, app: Any, consumer: Any):  # noqa: N802 (Celery's name)
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None
        stale = 0
        for q in (self._buffer, self._pending):
            while not q.empty():
                q.get_nowait()
                stale += 1
        if stale:
            log.warning("batch_buffer_dropped n=%d reason=consumer_restart", stale)
        self._count = count(1)
        return super().Strategy(task, app, consumer)
