"""``GET /metrics``: this API process's Prometheus metrics, for any valid key (reader or admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import Principal, require

router = APIRouter(tags=["ops"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}})
def metrics(_principal: Annotated[Principal, Depends(require("reader"))]) -> Response:
    """Prometheus text exposition of the process's default registry."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
