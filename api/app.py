"""The FastAPI app factory: ``uvicorn api.app:create_app --factory``. One router per domain."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from api import (
    audit,
    dead_letters,
    errors,
    health,
    images,
    ingest,
    metrics,
    openapi,
    reads,
    review,
    review_page,
)
from api.config import ApiSettings
from api.guards import plain_parameters
from api.state import AppState
from shared.config import Settings, get_settings
from shared.metrics import RequestTimer
from shared.publish import Publisher

log = logging.getLogger("tagger.api")


def create_app(settings: Settings | None = None, api_settings: ApiSettings | None = None) -> FastAPI:
    """Build the app; an unusable broker URL (memory://) fails here, at start-up, not per request."""
    settings = settings or get_settings()
    api_settings = api_settings or ApiSettings()
    publisher = Publisher.from_settings(settings)
    probe = Publisher(settings.broker_url, settings.tagging_queue,
                      connect_timeout_s=api_settings.readiness_timeout_s)
    state = AppState(settings=settings, api=api_settings, publisher=publisher, probe=probe)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info("api_started broker=%s queue=%s", publisher.broker, settings.tagging_queue)
        try:
            yield
        finally:
            state.close()

    # plain_parameters: no NUL or control character in any path or query parameter, on every route.
    app = FastAPI(title="Product tagger", version="1", lifespan=lifespan,
                  summary="Ingest product uploads; read tags; review uncertain ones.",
                  dependencies=[Depends(plain_parameters)])
    app.state.tagger = state
    app.add_middleware(RequestTimer)  # tagger_http_request_seconds{method,route,status}
    errors.install(app)
    openapi.install(app)  # models named only by $ref (the ingest body) into components
    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(reads.router)
    app.include_router(review.router)
    app.include_router(audit.router)
    app.include_router(dead_letters.router)
    app.include_router(images.router)
    app.include_router(review_page.router)
    review_page.mount_static(app)
    app.include_router(metrics.router)
    return app


def openapi_document() -> dict[str, Any]:
    """The document of an app built with fixed settings: it must not depend on this machine's env."""
    # Nothing connects: the publisher only names its broker until the first publish.
    settings = Settings(database_url="sqlite://", broker_url="redis://localhost:6379/0")
    return create_app(settings, ApiSettings()).openapi()
