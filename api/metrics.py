"""``GET /metrics``: this API process's Prometheus metrics, for any valid key (reader or admin).

Queue depths are read from the broker at scrape time (the API is the one process that reports them;
workers do not): a value set by a poller would be stale between polls and would need a thread.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import Principal, require
from api.errors import AUTH_ERRORS, responses
from api.state import get_state
from shared.config import Settings
from shared.metrics import refresh_queue_depths

router = APIRouter(tags=["ops"])


def watched_queues(settings: Settings) -> list[str]:
    """The tagging queue, and the training queue when one is configured (each once)."""
    return list(dict.fromkeys(q for q in (settings.tagging_queue, settings.training_queue) if q))


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."},
                       **responses(*AUTH_ERRORS)})
def metrics(request: Request, _principal: Annotated[Principal, Depends(require("reader"))]) -> Response:
    """Prometheus text exposition of this process's metrics; ``tagger_queue_depth`` is read from the broker
    at each scrape. If the broker cannot be read within ``TAGGER_API_READINESS_TIMEOUT_S``, the scrape still
    answers: the depth series are left out and ``tagger_broker_up`` is 0.
    """
    # A sync route, so it runs on the thread pool: a slow broker never blocks the event loop.
    state = get_state(request)
    refresh_queue_depths(state.settings.broker_url, watched_queues(state.settings),
                         state.api.readiness_timeout_s)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
