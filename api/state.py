"""What one app instance holds for its requests: settings and one long-lived Publisher."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from api.config import ApiSettings
from shared.config import Settings
from shared.publish import Publisher


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

    def close(self) -> None:
        """Release the broker connections (app shutdown)."""
        self.publisher.close()
        self.probe.close()


def get_state(request: Request) -> AppState:
    """The state of the app serving this request (a dependency, so tests can run several apps)."""
    state: AppState = request.app.state.tagger
    return state
