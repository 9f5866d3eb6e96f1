"""Send ``product.uploaded`` events to the tagging queue from any Python service.

Imports only pydantic and Celery's client side: no torch, no workers/ package, so a seller service
can publish without loading a model. The worker owns the task; this side knows it only by name
(:data:`shared.tasks.TAG_PRODUCT`).

Two modes. Given a ``database_url`` (the tagger's database), :meth:`Publisher.publish` goes through
the outbox (:mod:`shared.outbox`, the API's contract): each event is recorded in ``tagging_events``
and committed before it is sent, so the sweeper re-sends what the broker loses, including a message
a worker was SIGKILLed holding between kombu's pop and its unacked record. SQLAlchemy and the
database driver are imported only then, on the first such publish. Without one, nothing touches a
database and delivery rests on the broker alone: not covered against a worker crash between pop
and ack, nor a broker that loses its data.

Envelopes: a call's events go out up to ``events_per_message`` (``TAGGER_EVENTS_PER_MESSAGE``,
default 50) per task message (:func:`shared.tasks.tag_product_kwargs`), so the worker pays its cost
per message (a BRPOP, the unacked record, a Celery Request and its task events) once per that many
events; 1 sends one message per event, as before envelopes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Self

from celery import Celery
from celery import signals as celery_signals
from celery.utils.nodenames import anon_nodename
from kombu.exceptions import BatchPublishError, OperationalError
from kombu.utils.url import maybe_sanitize_url
from kombu.utils.uuid import uuid

from shared.config import Settings
from shared.errors import PermanentError, TransientError
from shared.events import ProductUploaded
from shared.tasks import MAX_EVENTS_PER_MESSAGE, TAG_PRODUCT, kwargs_repr, tag_product_kwargs

log = logging.getLogger("shared.publish")
BROKER_SETTING = "TAGGER_BROKER_URL"
# Events per Redis pipeline: the API's largest request (TAGGER_API_MAX_BATCH, 500) and the sweeper's
# chunk are one round trip; a bigger call is several pipelines, each confirmed before the next.
# (Rounded down to whole envelopes; an envelope bigger than this is a pipeline of its own.)
PIPELINE_EVENTS = 500
#: Events per message when none is given: the setting's default (TAGGER_EVENTS_PER_MESSAGE).
DEFAULT_EVENTS_PER_MESSAGE: int = Settings.model_fields["events_per_message"].default
# kombu counts commands, not messages (a queue with an expiry adds PEXPIREs per message).
_PIPELINE_MAX_COMMANDS = PIPELINE_EVENTS * 16


class PublisherConfigError(PermanentError):
    """The publisher cannot work with this configuration (for example an in-process broker)."""


class BrokerUnavailable(TransientError):
    """The broker refused or dropped the connection during a :meth:`Publisher.publish` call.

    ``sent``: how many of the call's events, counted from the first, are known to be on the queue
    (whole pipelines the broker confirmed). Every later event is *not known to be queued*: a pipeline
    that fails may still have delivered some of its messages, and which ones cannot be told, so the
    caller re-sends all of them (duplicates are harmless: the worker de-duplicates by ``event_id``).
    """

    def __init__(self, message: str, sent: int = 0, reason: str = "", *, total: int = 0,
                 recorded: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.reason = reason or message  # the broker's own error, for callers that word their own message
        self.total = total  # events the failed call tried to send
        self.recorded = recorded  # True: all are committed in the outbox, and the sweeper will send them


class OutboxUnavailable(TransientError):
    """The outbox's database refused the events (down, or not migrated): nothing was recorded and
    nothing sent; publish them again later."""


def _as_event(item: ProductUploaded | Mapping[str, Any]) -> ProductUploaded:
    return item if isinstance(item, ProductUploaded) else ProductUploaded.model_validate(item)


def recorded_events(payloads: Iterable[Mapping[str, Any]],
                    events: Iterable[ProductUploaded]) -> list[ProductUploaded]:
    """The outbox's payloads to send (:func:`shared.outbox.record_and_send`) as events, without
    validating again those that are one of ``events`` (already validated by the caller, recorded as
    their ``model_dump``); a payload stored earlier (a known event still 'received') is validated."""
    own = {e.event_id: e for e in events}
    out = []
    for payload in payloads:
        event = own.get(payload.get("event_id"))  # type: ignore[arg-type]
        out.append(event if event is not None and payload == event.model_dump(mode="json")
                   else _as_event(payload))
    return out


def whole_envelopes(limit: int, per: int) -> int:
    """The most events at most ``limit`` (but at least one envelope) that make whole envelopes of
    ``per``: how a caller cuts a long list so no envelope is split across two calls or pipelines."""
    return max(per, limit // per * per)


class Publisher:
    """One minimal Celery client app and its connection pool, reused for every batch it sends.

    Thread-safe: each :meth:`publish` call borrows one pooled producer for its whole batch (kombu
    keeps a producer's open publish batch per thread).

    ``events_per_message``: events one task message carries at most (an envelope; default
    :data:`DEFAULT_EVENTS_PER_MESSAGE`; 1: one message per event). A call's events are cut into
    envelopes in order; a call of one event sends the single-event message.
    """

    def __init__(self, broker_url: str, queue: str = "tagging", *, database_url: str | None = None,
                 connect_timeout_s: float = 5.0, reply_timeout_s: float = 10.0,
                 events_per_message: int | None = None) -> None:
        per = DEFAULT_EVENTS_PER_MESSAGE if events_per_message is None else events_per_message
        if not 1 <= per <= MAX_EVENTS_PER_MESSAGE:
            raise PublisherConfigError(
                f"events_per_message is {per}: it must be 1 to {MAX_EVENTS_PER_MESSAGE} "
                "(TAGGER_EVENTS_PER_MESSAGE)")
        self.events_per_message = per
        if broker_url.split("://", 1)[0].lower() == "memory":
            raise PublisherConfigError(
                f"{BROKER_SETTING} is memory:// (an in-process broker): another process cannot reach it. "
                f"Set {BROKER_SETTING}=redis://host:6379/0 (or pass --broker)."
            )
        self.queue = queue
        self._delivery_mode: Any = None  # the queue's, noted by _declare
        self._origin: str | None = None  # the "origin" header, noted by _declare
        self._retry = True  # retry each publish: only where the transport does not batch (_declare)
        self.database_url = database_url  # set: publish() records each event first (the outbox)
        self.broker = maybe_sanitize_url(broker_url)  # safe to print: the password is masked
        # set_as_current=False: a host service that has its own Celery app keeps it as the default.
        self._app = Celery("tagger-publisher", broker=broker_url, set_as_current=False)
        self._app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            result_backend=None,
            broker_connection_timeout=connect_timeout_s,
            broker_connection_retry_on_startup=False,
            # A broker that accepts the connection and then hangs must not hold the caller (an
            # API request thread) forever: every reply has a deadline too.
            broker_transport_options={"socket_timeout": reply_timeout_s,
                                      "socket_connect_timeout": connect_timeout_s},
            # A failed send retries briefly, then raises: the caller decides what to do, nothing hangs.
            task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                       "interval_max": 1.0},
        )

    @classmethod
    def from_settings(cls, settings: Any = None, *, outbox: bool = False) -> Self:
        """Build from ``TAGGER_BROKER_URL`` / ``TAGGER_TAGGING_QUEUE`` (or a given Settings object);
        ``outbox=True``: record every event in ``TAGGER_DATABASE_URL`` before sending it.

        The sweeper and the API send events that are already recorded: they use the default."""
        if settings is None:
            from shared.config import get_settings

            settings = get_settings()
        return cls(settings.broker_url, settings.tagging_queue,
                   database_url=settings.database_url if outbox else None,
                   events_per_message=settings.events_per_message)

    def check(self) -> None:
        """Open one pooled broker connection (reused by :meth:`publish`), so a bad URL fails early."""
        try:
            with self._app.pool.acquire(block=True) as conn:
                conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2,
                                       timeout=self._app.conf.broker_connection_timeout)
        except (OperationalError, OSError) as exc:
            raise BrokerUnavailable(
                f"cannot reach the broker at {self.broker} ({exc}); check {BROKER_SETTING}"
            ) from exc

    def publish(self, events: Iterable[ProductUploaded | Mapping[str, Any]]) -> list[str]:
        """Validate every event, then send them in task messages of up to ``events_per_message``
        events each (envelopes), pipelined over one pooled connection.

        Validation happens before the first send, so an invalid dict raises ``ValidationError`` and
        nothing is published; it is the API's contract (:class:`ProductUploaded`), with the
        ``occurred_at`` bounds of this process's settings (``TAGGER_EVENT_EARLIEST``/``_MAX_SKEW_S``).
        Messages go out in Redis pipelines of up to :data:`PIPELINE_EVENTS`
        (one round trip each instead of one per event), each confirmed before the next is built.
        Returns the Celery task id of each event sent, in order (the events of one envelope share
        its id). Sending is at-least-once: on ``BrokerUnavailable`` its ``sent`` (in events) says
        which prefix is known queued; re-publish the rest (the worker de-duplicates by ``event_id``).

        With a ``database_url`` (the outbox): the events are recorded and committed first, and only
        those that need sending are sent (new ones, and known ones still 'received'; an event
        already tagged is not sent again). ``OutboxUnavailable``: the database refused them, nothing
        was sent. ``BrokerUnavailable`` (``recorded`` true): every event is recorded and the sweeper
        sends them; re-publishing them is safe too.
        """
        batch = [_as_event(e) for e in events]
        if self.database_url is None:
            return self._send_all(batch)
        return self._publish_recorded(batch)

    def _publish_recorded(self, batch: list[ProductUploaded]) -> list[str]:
        """The outbox: record and commit, send, mark enqueued (:func:`shared.outbox.record_and_send`)."""
        from sqlalchemy.exc import SQLAlchemyError  # here, not at the top: no database without an outbox

        from shared.outbox import record_and_send

        assert self.database_url is not None
        sent: list[str] | None = None  # the task ids, once the broker confirmed every message

        def send(payloads: list[dict[str, Any]]) -> list[str]:
            nonlocal sent
            sent = self._send_all(recorded_events(payloads, batch))
            return sent

        try:
            return record_and_send(self.database_url, batch, send) or []
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(
                f"{exc}. All {len(batch)} events are recorded in the outbox: the sweeper sends them "
                "once the broker is back (TAGGER_SWEEP_AFTER_S), and publishing them again is safe",
                sent=exc.sent, reason=exc.reason, total=exc.total, recorded=True,
            ) from exc
        except SQLAlchemyError as exc:
            from sqlalchemy.engine import make_url

            where = make_url(self.database_url).render_as_string(hide_password=True)
            if sent is not None:  # sent, not marked: the sweeper sends them once more (a harmless duplicate)
                log.warning("events_sent_not_marked n=%d error=%s", len(sent), type(exc).__name__)
                return sent
            raise OutboxUnavailable(
                f"cannot record {len(batch)} events in the outbox at {where} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:300]}): nothing was sent; check TAGGER_DATABASE_URL "
                "(migrated with 'tagger db upgrade'?) and publish them again"
            ) from exc

    def _send_all(self, batch: list[ProductUploaded]) -> list[str]:
        """Send validated events in envelopes, in confirmed pipelines; raises ``BrokerUnavailable``
        with ``sent`` (events)."""
        ids: list[str] = []
        sent = 0
        # Host services may hook Celery's publish signals: then every message goes through send_task,
        # which sends them. Otherwise the messages are built by Celery and published by kombu directly.
        direct = not self._signals_connected()
        send = self._send_direct if direct else self._send
        per = self.events_per_message
        step = whole_envelopes(PIPELINE_EVENTS, per)
        try:
            with self._app.producer_or_acquire() as producer:
                if direct:
                    self._declare(producer)
                for start in range(0, len(batch), step):
                    chunk = batch[start:start + step]
                    # The outermost batch() exit flushes; max_size keeps kombu from flushing part of it
                    # earlier, so a chunk is confirmed whole or not known at all.
                    with producer.batch(max_size=_PIPELINE_MAX_COMMANDS):
                        for at in range(0, len(chunk), per):
                            envelope = chunk[at:at + per]
                            ids.extend([send(producer, envelope)] * len(envelope))
                    sent = len(ids)
        except (OperationalError, BatchPublishError, OSError) as exc:
            # BatchPublishError only says "delivery is uncertain"; the broker's own error is its cause.
            reason = f"{exc}: {exc.__cause__}" if isinstance(exc, BatchPublishError) else str(exc)
            raise BrokerUnavailable(
                f"lost the broker at {self.broker} ({reason}): {sent} of {len(batch)} events are known "
                f"to be queued, the other {len(batch) - sent} may or may not be; check {BROKER_SETTING}",
                sent=sent, reason=reason, total=len(batch),
            ) from exc
        return ids

    def _send(self, producer: Any, events: list[ProductUploaded]) -> str:
        """One task message of ``events`` (buffered while a batch is open); returns its task id."""
        return self._app.send_task(
            TAG_PRODUCT.name, kwargs=tag_product_kwargs([e.model_dump(mode="json") for e in events]),
            queue=self.queue, producer=producer, serializer="json", ignore_result=True,
            # Celery would saferepr the whole payload into these headers, read only by logs and Flower
            # (about 80 us of CPU per event, measured); the event ids are what an operator looks for.
            argsrepr="()", kwargsrepr=kwargs_repr([e.event_id for e in events]),
        ).id

    @staticmethod
    def _signals_connected() -> bool:
        return bool(celery_signals.before_task_publish.receivers
                    or celery_signals.after_task_publish.receivers
                    or celery_signals.task_sent.receivers)

    def _declare(self, producer: Any) -> None:
        """Declare the queue once per call (send_task binds and checks it per message; kombu caches
        the declaration per connection), with the app's publish retry policy; note its delivery mode
        as send_task_message takes it (the queue's exchange's, else the app's default: persistent)."""
        queue = self._app.amqp.queues[self.queue]
        producer.maybe_declare(queue, retry=True, **self._app.conf.task_publish_retry_policy)
        self._delivery_mode = (getattr(queue.exchange, "delivery_mode", None)
                               or self._app.conf.task_default_delivery_mode)
        # Redis buffers every publish inside producer.batch() (nothing to retry there: the pipeline
        # is sent when the batch closes); a transport that publishes at once keeps the retry policy.
        self._retry = producer.connection.transport.driver_type != "redis"
        self._origin = anon_nodename()  # what as_task_v2 computes per message (pid@host); per call here

    def _send_direct(self, producer: Any, events: list[ProductUploaded]) -> str:
        """The message :meth:`_send` sends, built by Celery (``amqp.as_task_v2``, protocol 2) and handed
        to kombu's ``producer.publish`` as ``send_task_message`` would, without ``send_task``'s routing,
        configuration look-ups and per-message queue binding (about 3/4 of its CPU per event,
        measured: bench/publish.py). The queue is declared by :meth:`_declare`."""
        app = self._app
        task_id = uuid()
        headers, properties, body, _ = app.amqp.as_task_v2(
            task_id, TAG_PRODUCT.name, (), tag_product_kwargs([e.model_dump(mode="json") for e in events]),
            reply_to=app.thread_oid, ignore_result=True, origin=self._origin,
            argsrepr="()", kwargsrepr=kwargs_repr([e.event_id for e in events]),
        )
        # On Redis this only buffers (a failure when the batch sends raises BatchPublishError, as before).
        producer.publish(body, exchange="", routing_key=self.queue, serializer="json", headers=headers,
                         delivery_mode=self._delivery_mode, retry=self._retry,
                         retry_policy=self._app.conf.task_publish_retry_policy if self._retry else None,
                         **properties)
        return task_id

    def close(self) -> None:
        """Release the pooled broker connections."""
        self._app.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
