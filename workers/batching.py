"""celery-batches, hardened for a broker that restarts and for batches that cannot hand off.

celery-batches 0.11 arms its flush timer once (on the first message) and keeps the handle; when
the consumer reconnects, Celery clears its timer, the handle still looks armed, and buffered
requests are never flushed (celery-batches #99/#107). Buffered requests from the old connection
can no longer be acked either. So every time the consumer (re)builds its strategy we drop the
stale handle and the stale buffer: Redis redelivers those messages after the visibility timeout,
and the batch writes are idempotent.

celery-batches also sends none of the per-task events Flower counts, and never counts the requests
in the worker's processed totals. Here each request of a batch gets them, through the consumer's
event dispatcher (which buffers task events and sends them in groups): ``task-received`` when it is
buffered, ``task-started`` when its batch starts, then ``task-succeeded`` (runtime: its batch's) or
``task-failed`` / ``task-retried`` with the reason KIND the batch reported under :data:`OUTCOMES`
(``dead_lettered: malformed``, never the event's data). Arguments are never sent: they hold the
product's title and description.

A message may carry an envelope of events (:mod:`shared.tasks`), so here ``flush_every`` counts
EVENTS, not messages (upstream counts messages): a batch runs once the buffered messages hold
``flush_every`` events (or at the timer), so a batch stays about the size the model and the write
were sized for whatever the producers send (one event per message, or 50); it may hold up to one
envelope more, and the batch itself (:mod:`workers.tagging`) runs the model on at most
``batch_size`` events at a time. Task events stay per message (Flower lists each message as a task;
an envelope's ``task-succeeded`` result counts its events' outcomes), the outcome counter
``tagger_event_outcomes_total`` counts events.

celery-batches flushes whatever is buffered at each tick of a repeating ``flush_interval`` timer, so
under load a tick that lands while the consumer refills its prefetch window splits a full batch
into 2 + 30 (measured: one batch in four). Here a partial batch runs only once its OLDEST request
has waited half the interval (the timer ticks twice per interval): the longest wait stays under
``flush_interval``, and a refill in progress has time to complete the batch.

celery-batches also acks every request of a batch when the batch returns, even when it raised.
Here a batch reports the requests it could neither write, re-enqueue nor dead-letter (the broker
and the database both down) under :data:`UNACKED`; those, and every request of a batch that
raised, are rejected with requeue instead of acked, so the broker keeps them. The others are acked
together (:func:`workers.acks.acknowledge_all`: on kombu's Redis transport one pipeline for the
whole batch instead of one per request; one by one on any other transport or when that fails), on
the consumer thread like every Celery ack.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from itertools import count
from queue import Queue
from time import monotonic, time
from typing import Any

from celery.worker import state as worker_state
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from shared.metrics import count_outcomes
from shared.tasks import MAX_EVENTS_PER_MESSAGE
from workers.acks import acknowledge_all
from workers.prefetch import EventWindow, channel_qos

log = logging.getLogger(__name__)

#: Key of a batch's return value: ids of the requests that must not be acked.
UNACKED = "unacked_ids"
#: Key of a batch's return value: ``{request_id: [outcome of each of its events]}``, each outcome
#: ``"succeeded" | "failed:KIND" | "retried:KIND"`` (a bare string: the request's one outcome).
OUTCOMES = "outcomes"


def events_in(req: Any) -> int:
    """How many events a request's message carries (an envelope's length; 1 otherwise, including a
    malformed message), cheaply: no validation, which the batch does."""
    kwargs = getattr(req, "kwargs", None)
    items = kwargs.get("events") if isinstance(kwargs, dict) else None
    return min(len(items), MAX_EVENTS_PER_MESSAGE) if isinstance(items, list) and items else 1


def _not_active(*_args: Any) -> None:
    """Counted as processed, not listed as active: Celery's active requests drive prefetch restoring
    and shutdown cancelling, which a buffered batch request must not join."""


class _EventfulBuffer(Queue):
    """The batch buffer: a request put in it is announced (``task-received``); ``events`` counts the
    events its requests carry (put and drained on the consumer thread only), and ``window`` learns
    them (prefetch counted in events, :mod:`workers.prefetch`)."""

    def __init__(self, window: EventWindow | None = None) -> None:
        super().__init__()
        self.events = 0
        self.window = window

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        n = events_in(item)
        self.events += n
        if self.window is not None:
            self.window.taken(item, n)
        send_received(item)

    def drained(self) -> None:
        self.events = 0


def send_received(req: Any) -> None:
    try:
        req.send_event("task-received", name=req.name, args="", kwargs="", root_id=req.root_id,
                       parent_id=req.parent_id, retries=(req.request_dict or {}).get("retries", 0),
                       eta=req.eta and req.eta.isoformat(), expires=req.expires and req.expires.isoformat())
    except Exception:  # events are monitoring: never lose a request over them
        log.debug("task_event_failed", exc_info=True)


def send_started(requests: Collection[Any]) -> None:
    for req in requests:
        try:
            worker_state.task_accepted(req, add_request=_not_active, add_active_request=_not_active)
            req.send_event("task-started")
        except Exception:
            log.debug("task_event_failed", exc_info=True)


def _event_outcomes(req: Any, reported: Any, keep: set[str]) -> list[str]:
    """The outcome of each event of ``req``: reported by the batch, else handed back (kept for the
    broker) or succeeded (acked and not named: the batch handled it)."""
    if req.id in keep:
        return ["handed_back"] * events_in(req)
    if isinstance(reported, list | tuple) and reported:
        return [str(o) for o in reported]
    return [str(reported)] if reported is not None else ["succeeded"] * events_in(req)


def summary(outcomes: list[str]) -> str:
    """An envelope's outcomes for Flower: ``events=N`` then each outcome's count (kinds, no data)."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    return " ".join([f"events={len(outcomes)}", *(f"{o}={k}" for o, k in counts.items())])


def send_outcomes(requests: Collection[Any], result: Any, runtime: float, keep: set[str]) -> None:
    """One task event per request (message), from the batch's report; every EVENT of it counted in
    ``tagger_event_outcomes_total``. A single-event request's task event says its outcome; an
    envelope's is ``task-failed`` / ``task-retried`` only when all its events were, else
    ``task-succeeded`` (its events were handed on: the message is done), its result the counts of
    its events' outcomes (:func:`summary`). Requests kept for the broker get none here (their reject
    sends ``task-rejected``; they come back with the same id)."""
    outcomes = result.get(OUTCOMES) if isinstance(result, dict) else None
    outcomes = outcomes if isinstance(outcomes, dict) else {}
    each = {req.id: _event_outcomes(req, outcomes.get(req.id), keep) for req in requests}
    count_outcomes(o for outs in each.values() for o in outs)
    for req in requests:
        if req.id in keep:
            continue
        outs = each[req.id]
        states = {o.partition(":")[0] for o in outs}
        state, _, kind = outs[0].partition(":") if len(states) == 1 else ("succeeded", "", "")
        if len(outs) > 1:
            kind = summary(outs) if len({*outs}) > 1 else f"{kind or 'unknown'} ({len(outs)} events)"
        try:
            if state == "failed":
                req.send_event("task-failed", exception=f"dead_lettered: {kind or 'unknown'}", traceback="")
            elif state == "retried":
                req.send_event("task-retried", exception=f"requeued: {kind or 'unknown'}", traceback="")
            else:
                req.send_event("task-succeeded", result=summary(outs) if len(outs) > 1 else "",
                               runtime=runtime)
        except Exception:
            log.debug("task_event_failed", exc_info=True)


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
        # Prefetch in events too (workers.prefetch): the message limit's intent, 2 x batch_size events
        # per thread, whatever the envelopes' size; never fewer messages than one per thread + one.
        threads = max(1, int(getattr(consumer.pool, "num_processes", 1) or 1))
        window = EventWindow(max(1, consumer.prefetch_multiplier * threads), threads + 1)
        self._buffer = _EventfulBuffer(window)  # announces each request it buffers (task-received)
        self._count = count(1)
        self._first_at: float | None = None  # when the oldest request now buffered arrived
        handler = super().Strategy(task, app, consumer)
        timer = consumer.timer
        # Acks run on the consumer thread, as Celery's own do (Request.acknowledge defers to it).
        self._ack = lambda requests: consumer.call_soon(acknowledge_all, requests)
        # So do task events: Celery's EventDispatcher buffers them in a list that a flush publishes
        # and then clears without a lock against senders, so an event appended by a pool thread
        # during another thread's flush was lost (Flower then showed a task finished, never started).
        self._on_consumer = lambda fn, *args: consumer.call_soon(fn, *args)

        def on_message(*args: Any, **kwargs: Any) -> None:
            if self._buffer.empty():
                self._first_at = monotonic()
            if self._tref is None:  # armed here so that it ticks twice per interval (upstream: once)
                self._tref = timer.call_repeatedly(self.flush_interval / 2, self._do_flush)
            handler(*args, **kwargs)  # buffers it; upstream flushes at its flush_every-th MESSAGE
            qos = channel_qos(consumer)
            if qos is not None:
                window.install(qos)  # once per channel (a reconnect brings a new one)
            if self._buffer.events >= self.flush_every:  # here: once flush_every EVENTS are buffered
                self._do_flush()

        return on_message

    def _do_flush(self) -> None:
        """Flush a full batch at once; a partial one only when its oldest request is half an interval old."""
        buffer = self._buffer
        if not flush_due(getattr(buffer, "events", buffer.qsize()), self.flush_every,
                         getattr(self, "_first_at", None), monotonic(), self.flush_interval,
                         pending=not self._pending.empty()):
            return  # young partial batch: the next tick (or the flush_every-th event) takes it
        self._first_at = None
        if isinstance(buffer, _EventfulBuffer):
            buffer.drained()  # upstream's flush takes every request buffered now (this thread's)
        super()._do_flush()

    def flush(self, requests: Collection[Any]) -> Any:
        """Run the batch in the pool; ack after it returns, except what it could not hand off."""
        requests = list(requests)
        ack = getattr(self, "_ack", acknowledge_all)  # set by Strategy (a worker's consumer)
        on_consumer = getattr(self, "_on_consumer", lambda fn, *args: fn(*args))
        early = [r for r in requests if not r.task.acks_late]
        serializable = ([SimpleRequest.from_request(r) for r in requests],)

        started = [0.0]

        def on_accepted(pid: int, time_accepted: float) -> None:
            started[0] = time()
            if early:
                ack(early)
            on_consumer(send_started, requests)

        def on_return(result: Any) -> None:
            keep = _keep_ids(result, requests)
            if keep:
                log.warning("batch_requeued_unacked n=%d", len(keep))
            on_consumer(send_outcomes, requests, result, time() - (started[0] or time()), keep)
            for req in requests:
                if req.id in keep:
                    # Back to the queue now when the broker is up; when it is not, the message stays
                    # in Redis's unacked set and comes back after the visibility timeout.
                    req.reject(requeue=True)
            done = [req for req in requests if req.id not in keep]
            if done:
                ack(done)

        return self._pool.apply_async(
            apply_batches_task, (self, serializable, 0, None),
            accept_callback=on_accepted, callback=on_return,
        )


def flush_due(buffered: int, flush_every: int, first_at: float | None, now: float, interval: float,
              pending: bool = False) -> bool:
    """Whether a flush tick should run the buffer now: when it is empty (upstream then stops the
    timer), full (``buffered`` events, at least ``flush_every``), holds ETA requests, or its oldest
    request has waited half of ``interval``."""
    if buffered == 0 or buffered >= flush_every or pending or first_at is None:
        return True
    return now - first_at >= interval / 2
