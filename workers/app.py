"""The Celery app: Redis (or in-memory for the demo), JSON only, acks after the batch commits."""

from __future__ import annotations

from typing import Any

from celery import Celery

from shared.config import Settings, get_settings
from shared.tasks import task_routes
from workers.schedule import beat_schedule


def transport_options(s: Settings) -> dict:
    """Redis: kombu restores unacked messages older than the visibility timeout in a sweep that
    runs every interval x throttle seconds (10 x 10 by default): with a short timeout a killed
    worker's messages would wait minutes. Sweep every quarter of the timeout, at least every 10 s.
    The sweep holds a Redis lock that a worker killed mid-sweep leaves behind until it expires
    (300 s by default), so it expires sooner when the timeout is short."""
    return {
        "visibility_timeout": s.visibility_timeout_s,
        "unacked_restore_interval": max(1, min(10, s.visibility_timeout_s // 4)),
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": max(30, min(300, s.visibility_timeout_s)),
    }


def celery_config(s: Settings) -> dict[str, Any]:
    """The app's configuration from settings. Prefetch is twice the batch so the next batch fills
    while one runs (FIELD-NOTES: prefetch x concurrency must exceed flush_every)."""
    return {
        "broker_url": s.broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_default_queue": s.tagging_queue,
        "task_routes": task_routes(s),
        "beat_schedule": beat_schedule(s),
        "worker_prefetch_multiplier": 2 * s.batch_size,
        "broker_transport_options": transport_options(s),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
    }


class TaggerCelery(Celery):
    """The workers' Celery app. It carries the settings it was built with and is configured from
    them only when first used, so importing this module reads nothing from the environment."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__("tagger", include=["workers.tasks"])
        self._tagger_settings = settings
        self.add_defaults(lambda: celery_config(self.tagger_settings))

    @property
    def tagger_settings(self) -> Settings:
        """The settings the tasks run with; an app built without any reads the environment once."""
        if self._tagger_settings is None:
            self._tagger_settings = get_settings()
        return self._tagger_settings


def create_app(settings: Settings | None = None) -> TaggerCelery:
    """An app for these settings (default: the environment's, read on first use)."""
    return TaggerCelery(settings)


def settings_of(app: Any) -> Settings:
    """The settings a worker's app was built with (the environment's for any other app)."""
    return app.tagger_settings if isinstance(app, TaggerCelery) else get_settings()


# What ``celery -A workers.app`` and ``tagger worker`` run: configured from the environment on first use.
app = create_app()

# Connect the start-up signals before any worker can send them.
import workers.signals  # noqa: E402,F401
