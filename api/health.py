"""``/healthz`` (the process answers) and ``/readyz`` (database and broker reachable); no auth,
so load balancers and orchestrators can call them. Details of a failure go to the log, not out."""

from __future__ import annotations

import logging
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.state import get_state
from shared.db.session import get_engine
from shared.errors import TaggerError

log = logging.getLogger("tagger.api.health")
router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    """Each dependency ``ok`` or ``down``; ``detail`` names the ones down (503 only)."""

    # Documents the body readyz builds by hand (it picks its status code itself).
    status: Literal["ready", "unavailable"]
    checks: dict[str, Literal["ok", "down"]]
    detail: str | None = None


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: answers as long as the process serves requests; touches nothing else."""
    return {"status": "ok"}


def _database_ok(url: str) -> bool:
    try:
        with get_engine(url).connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        log.warning("readiness_failed dependency=database error=%s", type(exc).__name__)
        return False
    return True


def _broker_ok(request: Request) -> bool:
    try:
        get_state(request).probe.check()
    except TaggerError as exc:
        log.warning("readiness_failed dependency=broker error=%s", type(exc).__name__)
        return False
    return True


@router.get("/readyz", responses={
    200: {"model": Readiness, "description": "The database and the broker answer."},
    503: {"model": Readiness, "description": "The database or the broker is down (named)."},
})
def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when the database answers SELECT 1 and the broker accepts a connection, else 503."""
    checks = {"database": _database_ok(get_state(request).settings.database_url),
              "broker": _broker_ok(request)}
    down = [name for name, ok in checks.items() if not ok]
    body = {"status": "ready" if not down else "unavailable",
            "checks": {name: "ok" if ok else "down" for name, ok in checks.items()}}
    if down:
        body["detail"] = f"{' and '.join(down)} unreachable"
    return JSONResponse(body, status_code=503 if down else 200)
