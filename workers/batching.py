"""celery-batches, hardened for a broker that restarts and for batches that cannot hand off.

celery-batches 0.11 arms its flush timer once (on the first message) and keeps the handle; when
the consumer reconnects, Celery clears its timer, the handle still looks armed, and buffered
requests are never flushed (celery-batches #99/#107). Buffered requests from the old connection
can no longer be acked either. So every time the consumer (re)builds its strategy we drop the
stale handle and the stale buffer: Redis redelivers those messages after the visibility timeout,
and the batch writes are idempotent.

celery-batches flushes whatever is buffered at each tick of a repeating ``flush_interval`` timer, so
under load a tick that lands while the consumer refills its prefetch window splits a full batch
into 2 + 30 (measured: one batch in four). Here a partial batch runs only once its OLDEST request
has waited half the interval (the timer ticks twice per interval): the longest wait stays under
``flush_interval``, and a refill in progress has time to complete the batch.

celery-batches also acks every request of a batch when the batch returns, even when it raised.
Here a batch reports the requests it could neither write, re-enqueue nor dead-letter (the broker
and the database both down) under :data:`UNACKED`; those, and every request of a batch that
raised, are rejected with requeue instead of acked, so the broker keeps them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from itertools import count
from time import monotonic
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
        self._first_at: float | None = None  # when the oldest request now buffered arrived
        handler = super().Strategy(task, app, consumer)
        timer = consumer.timer

        def on_message(*args: Any, **kwargs: Any) -> None:
            if self._buffer.empty():
                self._first_at = monotonic()
            if self._tref is None:  # armed here so that it ticks twice per interval (upstream: once)
                self._tref = timer.call_repeatedly(self.flush_interval / 2, self._do_flush)
            handler(*args, **kwargs)

        return on_message

    def _do_flush(self) -> None:
        """Flush a full batch at once; a partial one only when its oldest request is half an interval old."""
        if not flush_due(self._buffer.qsize(), self.flush_every, getattr(self, "_first_at", None),
                         monotonic(), self.flush_interval, pending=not self._pending.empty()):
            return  # young partial batch: the next tick (or the flush_every-th message) takes it
        self._first_at = None
        super()._do_flush()

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


def flush_due(buffered: int, flush_every: int, first_at: float | None, now: float, interval: float,
              pending: bool = False) -> bool:
    """Whether a flush tick should run the buffer now: when it is empty (upstream then stops the
    timer), full, holds ETA requests, or its oldest request has waited half of ``interval``."""
    if buffered == 0 or buffered >= flush_every or pending or first_at is None:
        return True
    return now - first_at >= interval / 2
