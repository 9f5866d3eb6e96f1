"""celery-batches, hardened for a broker that restarts and for batches that cannot hand off.

celery-batches 0.11 arms its flush timer once (on the first message) and keeps the handle; when
the consumer reconnects, Celery clears its timer, the handle still looks armed, and buffered
requests are never flushed (celery-batches #99/#107). Buffered requests from the old connection
can no longer be acked either. So every time the consumer (re)builds its strategy we drop the
stale handle and the stale buffer: Redis redelivers those messages after the visibility timeout,
and the batch writes are idempotent.

celery-batches also acks every request of a batch when the batch returns, even when it raised.
Here a batch reports the requests it could neither write, re-enqueue nor dead-letter (the broker
and the database both down) under :data:`UNACKED`; those, and every request of a batch that
raised, are rejected with requeue instead of acked, so the broker keeps them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from itertools import count
from typing import Any

from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

log = logging.getLogger(__name__)

#: Key of a batch's return value: ids of the requests that must not be acked.
UNACKED = "unacked_ids"


def _keep_ids(result: Any, requests: Collection[Any]) -> set[str]:
    """Ids to requeue rather than ack: those the batch named, or all when it did not return a report."""
    if not isinstance(result, dict):  # the batch raised (apply_batches_task returns None)
        return {r.id for r in requests}
    return set(result.get(UNACKED) or ())


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

    def flush(self, requests: Collection[Any]) -> Any:
        """Run the batch in the pool; ack after it returns, except what it could not hand off."""
        requests = list(requests)
        early = [r for r in requests if not r.task.acks_late]
        serializable = ([SimpleRequest.from_request(r) for r in requests],)

        def on_accepted(pid: int, time_accepted: float) -> None:
            for req in early:
                req.acknowledge()

        def on_return(result: Any) -> None:
            keep = _keep_ids(result, requests)
            if keep:
                log.warning("batch_requeued_unacked n=%d", len(keep))
            for req in requests:
                if req.id in keep:
                    # Back to the queue now when the broker is up; when it is not, the message stays
                    # in Redis's unacked set and comes back after the visibility timeout.
                    req.reject(requeue=True)
                else:
                    req.acknowledge()

        return self._pool.apply_async(
            apply_batches_task, (self, serializable, 0, None),
            accept_callback=on_accepted, callback=on_return,
        )
