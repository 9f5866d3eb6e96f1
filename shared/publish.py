"""Send ``product.uploaded`` events to the tagging queue from any Python service.

Imports only pydantic and Celery's client side: no torch, no workers/ package, no database, so a
seller service can publish without loading a model. The worker owns the task; this side knows it
only by name (:data:`shared.events.TAG_TASK`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Self

from celery import Celery
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from shared.errors import PermanentError, TransientError
from shared.events import TAG_TASK, ProductUploaded

BROKER_SETTING = "TAGGER_BROKER_URL"


class PublisherConfigError(PermanentError):
    """The publisher cannot work with this configuration (for example an in-process broker)."""


class BrokerUnavailable(TransientError):
    """The broker refused or dropped the connection; ``sent`` events went out before it did."""

    def __init__(self, message: str, sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


def _as_event(item: ProductUploaded | Mapping[str, Any]) -> ProductUploaded:
    return item if isinstance(item, ProductUploaded) else ProductUploaded.model_validate(item)


class Publisher:
    """One minimal Celery client app and its connection pool, reused for every batch it sends.

    Thread-safe: each :meth:`publish` call borrows one pooled producer for its whole batch.
    """

    def __init__(self, broker_url: str, queue: str = "tagging", *, connect_timeout_s: float = 5.0) -> None:
        if broker_url.split("://", 1)[0].lower() == "memory":
            raise PublisherConfigError(
                f"{BROKER_SETTING} is memory:// (an in-process broker): another process cannot reach it. "
                f"Set {BROKER_SETTING}=redis://host:6379/0 (or pass --broker)."
            )
        self.queue = queue
        self.broker = maybe_sanitize_url(broker_url)  # safe to print: the password is masked
        # set_as_current=False: a host service that has its own Celery app keeps it as the default.
        self._app = Celery("tagger-publisher", broker=broker_url, set_as_current=False)
        self._app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            result_backend=None,
            broker_connection_timeout=connect_timeout_s,
            broker_connection_retry_on_startup=False,
            # A failed send retries briefly, then raises: the caller decides what to do, nothing hangs.
            task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                       "interval_max": 1.0},
        )

    @classmethod
    def from_settings(cls, settings: Any = None) -> Self:
        """Build from ``TAGGER_BROKER_URL`` / ``TAGGER_TAGGING_QUEUE`` (or a given Settings object)."""
        if settings is None:
            from shared.config import get_settings

            settings = get_settings()
        return cls(settings.broker_url, settings.tagging_queue)

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
        """Validate every event, then send one task message each over one pooled connection.

        Validation happens before the first send, so an invalid dict raises ``ValidationError`` and
        nothing is published. Returns the Celery task ids. Sending is at-least-once: the worker
        de-duplicates by ``event_id``, so re-publishing after a ``BrokerUnavailable`` is safe.
        """
        batch = [_as_event(e) for e in events]
        ids: list[str] = []
        try:
            with self._app.producer_or_acquire() as producer:
                for event in batch:
                    result = self._app.send_task(
                        TAG_TASK, kwargs={"event": event.model_dump(mode="json")}, queue=self.queue,
                        producer=producer, serializer="json", ignore_result=True,
                    )
                    ids.append(result.id)
        except (OperationalError, OSError) as exc:
            raise BrokerUnavailable(
                f"lost the broker at {self.broker} after {len(ids)} of {len(batch)} events ({exc}); "
                f"check {BROKER_SETTING}", sent=len(ids),
            ) from exc
        return ids

    def close(self) -> None:
        """Release the pooled broker connections."""
        self._app.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
