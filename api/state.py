"""What one app instance holds for its requests: settings and one long-lived Publisher."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from api.config import ApiSettings
from shared.config import Settings
from shared.outbox import DeferredMarks
from shared.publish import Publisher

log = logging.getLogger("tagger.api")


@dataclass(frozen=True)
class AppState:
    """Built once by create_app: a Publisher per app keeps one broker connection pool, not one per call."""

    settings: Settings
    api: ApiSettings
    publisher: Publisher
    probe: Publisher  # short connect timeout, so /readyz answers within about a second
    # GET /v1/taxonomy: one parsed taxonomy per model version (a version's artifact never changes).
    taxonomy_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    taxonomy_lock: threading.Lock = field(default_factory=threading.Lock)
    # POST /v1/events: enqueued marks not written yet (TAGGER_API_INGEST_DEFER_MARKS).
    marks: DeferredMarks = field(default_factory=DeferredMarks)

    def close(self) -> None:
        """Write the pending enqueued marks, release the broker connections (app shutdown)."""
        try:
            self.marks.flush(self.settings.database_url)
        except Exception as exc:  # noqa: BLE001  (unmarked rows are re-sent by the sweeper: harmless)
            log.warning("enqueued_marks_not_written n=%d error=%s", len(self.marks), exc)
        self.publisher.close()
        self.probe.close()


def get_state(request: Request) -> AppState:
    """The state of the app serving this request (a dependency, so tests can run several apps)."""
    state: AppState = request.app.state.tagger
    return state
