"""Every Celery task's contract, declared once: its name, its queue and its delivery options.

Producers (:mod:`shared.publish`, the API, the demo) send by name and never import ``workers/``;
the workers' task decorators, ``task_routes`` and the beat schedule are all derived from these
declarations, so a task cannot be renamed, or moved to another queue, in one place only. A name
is the wire contract: messages already queued under it must still find their task.

The ``tag_product`` message's keyword arguments are declared here too (:func:`tag_product_kwargs`,
:func:`events_of`): ``{"event": {...}}``, one event (every producer's message before envelopes,
and still what one event alone is sent as), or ``{"events": [{...}, ...]}``, an *envelope* of up
to ``TAGGER_EVENTS_PER_MESSAGE`` events, so that the broker's and Celery's cost per message (a
BRPOP, the unacked record, a Request, its task events) is paid once per envelope. Either may also
carry ``attempt`` (default 1) and ``last_error``, which then apply to every event it holds. A worker
reads both kinds, whatever its own setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shared.config import Settings

Queue = Literal["tagging", "training"]


@dataclass(frozen=True)
class TaskSpec:
    """One task. ``queue`` names which of the configured queues it runs on (their names are settings)."""

    name: str
    queue: Queue
    # True: acked after the work (a killed worker's message comes back). False: acked on receipt,
    # for long or periodic work that must never run twice because a worker died mid-run.
    acks_late: bool

    def queue_name(self, settings: Settings) -> str:
        """The queue this task is routed to under ``settings``."""
        return settings.tagging_queue if self.queue == "tagging" else settings.training_queue

    @property
    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``@app.task``: one preset, so no decorator retypes (or mistypes) them."""
        return {"name": self.name, "acks_late": self.acks_late, "ignore_result": True}


TAG_PRODUCT = TaskSpec("tagger.tag_product", "tagging", acks_late=True)
RETRAIN = TaskSpec("tagger.retrain", "training", acks_late=False)
CHECK_NEW_LABELS = TaskSpec("tagger.check_new_labels", "training", acks_late=False)
SWEEP_INGESTED = TaskSpec("tagger.sweep_ingested", "training", acks_late=False)
TASKS: tuple[TaskSpec, ...] = (TAG_PRODUCT, RETRAIN, CHECK_NEW_LABELS, SWEEP_INGESTED)


def task_routes(settings: Settings) -> dict[str, dict[str, str]]:
    """Celery's ``task_routes``: every task to its queue."""
    return {task.name: {"queue": task.queue_name(settings)} for task in TASKS}


# --- the tag_product message ------------------------------------------------------------------------

#: Most events one tag_product message may carry (the bound of TAGGER_EVENTS_PER_MESSAGE); a worker
#: dead-letters a bigger envelope whole, as malformed.
MAX_EVENTS_PER_MESSAGE = 1000


class MalformedMessage(ValueError):
    """A tag_product message whose events cannot be told apart; the text is the reason (no data)."""


def tag_product_kwargs(events: Sequence[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """The keyword arguments of ONE tag_product message carrying ``events`` (JSON-ready dicts):
    ``{"event": e}`` for one (the message every producer sent before envelopes), ``{"events": [...]}``
    for more; ``extra`` (``attempt``, ``last_error``) applies to all of them."""
    if not events:
        raise ValueError("a tag_product message carries at least one event")
    if len(events) > MAX_EVENTS_PER_MESSAGE:
        raise ValueError(f"{len(events)} events: at most {MAX_EVENTS_PER_MESSAGE} per message")
    body: dict[str, Any] = {"event": events[0]} if len(events) == 1 else {"events": list(events)}
    return {**body, **extra}


def kwargs_repr(event_ids: Sequence[str]) -> str:
    """What a message's ``kwargsrepr`` header (read by logs and Flower) says: event ids, never data."""
    if len(event_ids) == 1:
        return f"{{'event': {{'event_id': {event_ids[0]!r}, ...}}}}"
    return f"{{'events': [{len(event_ids)} events: {event_ids[0]!r} ... {event_ids[-1]!r}]}}"


def events_of(kwargs: Mapping[str, Any]) -> list[Any]:
    """The raw events a tag_product message carries, in order (each still to be validated).
    Raises :class:`MalformedMessage` when the message is neither kind."""
    if "events" in kwargs:
        if "event" in kwargs:
            raise MalformedMessage("message: carries both 'event' and 'events'")
        items = kwargs["events"]
        if not isinstance(items, list) or not items:
            raise MalformedMessage("events: must be a non-empty list of events")
        if len(items) > MAX_EVENTS_PER_MESSAGE:
            raise MalformedMessage(f"events: {len(items)} events in one message, at most "
                                   f"{MAX_EVENTS_PER_MESSAGE}")
        return list(items)
    return [kwargs.get("event")]
