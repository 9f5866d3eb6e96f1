"""Prefetch counted in events, not only in messages.

kombu counts prefetch in messages (``worker_prefetch_multiplier`` x concurrency: 2 x batch_size per
thread), which is right when a message is one event. With envelopes (:mod:`shared.tasks`: up to
``TAGGER_EVENTS_PER_MESSAGE`` events each) the same count would let one worker hold 50 times more
events than its batches need: events another worker could be tagging, and that wait out the
visibility timeout if this worker is killed.

:class:`EventWindow` keeps kombu's message limit and adds one in events: the channel takes another
message only while the events it holds unacked are under ``max_events`` (the message limit's
intent: 2 x batch_size per thread), or while it holds fewer messages than ``min_messages`` (one
per thread and one buffered, so a huge envelope never starves a thread). It wraps the channel QoS's
``can_consume``, as Celery's own ``worker_disable_prefetch`` does. What is held is read from the
QoS itself (its delivered, not yet acked tags) each time, so a request this module never hears of
again (acked, rejected, dropped on a reconnect) cannot leak into the count. A request with an ETA
(a retry's countdown) counts as no event: Celery raises the message limit for those, and counting
them could stall the worker until they are due.

Everything here runs on the consumer thread (the buffer's ``put``, kombu's polling), like kombu's
QoS it reads.
"""

from __future__ import annotations

from types import MethodType
from typing import Any

#: How many stale entries (tags no longer held) the map may keep before it is pruned.
_SLACK = 64


class EventWindow:
    """The events of each delivered message (by delivery tag) and the limit on their sum."""

    def __init__(self, max_events: int, min_messages: int) -> None:
        if max_events < 1 or min_messages < 1:
            raise ValueError("max_events and min_messages must be >= 1")
        self.max_events = max_events
        self.min_messages = min_messages
        self._events: dict[Any, int] = {}

    def taken(self, request: Any, events: int) -> None:
        """A request was buffered: remember its message's events (none for an ETA request)."""
        message = getattr(request, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag is not None and not getattr(request, "eta", None):
            self._events[tag] = events

    def held(self, qos: Any) -> tuple[int, int]:
        """(messages, events) held unacked on ``qos`` that this window counts."""
        dirty = qos._dirty
        tags = [t for t in qos._delivered if t not in dirty]
        counted = [self._events[t] for t in tags if t in self._events]
        if len(self._events) > len(tags) + _SLACK:  # forget what kombu no longer holds
            live = set(tags)
            self._events = {t: n for t, n in self._events.items() if t in live}
        return len(counted), sum(counted)

    def room(self, qos: Any) -> bool:
        messages, events = self.held(qos)
        return messages < self.min_messages or events < self.max_events

    def install(self, qos: Any) -> None:
        """Make ``qos`` (a kombu virtual-transport channel QoS) consume only while :meth:`room`.
        Idempotent per QoS object; a reconnect brings a new channel, installed again."""
        if getattr(qos, "_tagger_event_window", None) is self:
            return
        original = getattr(qos, "_tagger_can_consume", None) or qos.can_consume
        window = self

        def can_consume(self_qos: Any) -> bool:
            return bool(original()) and window.room(self_qos)

        qos._tagger_can_consume = original
        qos._tagger_event_window = self
        qos.can_consume = MethodType(can_consume, qos)


def channel_qos(consumer: Any) -> Any | None:
    """The task consumer's channel QoS when it is a kombu virtual transport's (Redis; it has the
    delivered map this module reads), else None (e.g. AMQP, where prefetch is the broker's)."""
    task_consumer = getattr(consumer, "task_consumer", None)
    qos = getattr(getattr(task_consumer, "channel", None), "qos", None)
    return qos if hasattr(qos, "_delivered") and hasattr(qos, "_dirty") else None
