"""``GET /metrics``: this API process's Prometheus metrics, for any valid key (reader or admin).

Queue depths are read from the broker, and the live audit's switches from ``auto_switches``, at scrape
time (the API is the one process that reports them; workers do not): a value set by a poller would be
stale between polls and would need a thread.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import Principal, require
from api.errors import AUTH_ERRORS, responses
from api.state import get_state
from shared.audit import switches
from shared.config import Settings
from shared.db.session import session_scope
from shared.metrics import refresh_queue_depths, set_audit_switches

log = logging.getLogger("tagger.api.metrics")

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
    answers: the depth series are left out and ``tagger_broker_up`` is 0. The live audit's gauges
    (``tagger_auto_enabled``, ``tagger_audit_precision_lower``/``_upper``, ``tagger_audit_decisions``, per
    axis and value) are read from the database at each scrape, and left out if it cannot be read.
    """
    # A sync route, so it runs on the thread pool: a slow broker never blocks the event loop.
    state = get_state(request)
    refresh_queue_depths(state.settings.broker_url, watched_queues(state.settings),
                         state.api.readiness_timeout_s)
    refresh_audit(state.settings.database_url)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def refresh_audit(database_url: str) -> None:
    """Set the audit gauges from ``auto_switches`` now; if the table cannot be read, the series are left
    out (never stale ones) and a warning is logged. Never raises."""
    try:
        with session_scope(database_url) as session:
            rows = [(r.axis, r.value, r.enabled, r.lower, r.upper, r.n) for r in switches(session)]
    except Exception as exc:
        log.warning("audit_switches_unavailable error=%s", type(exc).__name__)
        rows = None
    set_audit_switches(rows)
