"""``GET /v1/audit``: the live audit's switches, for anyone who relies on ``auto`` tags. Role ``reader``.

One row per value that reviewers have judged audit or paused tags of: the live precision evidence
and whether the model may still auto-apply the value. Values never audited have no row and are
enabled. The rule and its reasoning: shared/audit.py and docs/MODEL.md, "Live audit".
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from api.auth import require
from api.errors import AUTH_ERRORS, responses
from api.state import get_state
from shared.audit import CONFIDENCE, switches
from shared.db.session import session_scope

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=[Depends(require("reader"))])


class Switch(BaseModel):
    """One value's live precision and its switch."""

    axis: str
    value: str
    enabled: bool = Field(description="Whether the model may auto-apply this value now; false: its tags "
                          "go to review with reason 'paused'.")
    n: int = Field(description="Reviewers' decisions on audit/paused tags of the value, latest "
                   "TAGGER_AUDIT_WINDOW at most.")
    hits: int = Field(description="Of them, confirmed.")
    precision: float | None = Field(description="hits / n; null when n is 0.")
    lower: float = Field(description="One-sided lower confidence bound of the live precision.")
    upper: float = Field(description="One-sided upper confidence bound; the value is switched off while "
                         "this is under target.")
    target: float = Field(description="The target precision the switch was judged against.")
    reason: str = Field(description="The verdict in words.")
    changed_at: datetime | None = Field(description="When the switch last flipped; null: never.")
    updated_at: datetime = Field(description="When the evidence was last recomputed.")


class Switches(BaseModel):
    """Every stored switch, by axis and value."""

    confidence: float = Field(description="Confidence of the bounds (one-sided).")
    items: list[Switch]


@router.get("/audit", response_model=Switches, responses=responses(*AUTH_ERRORS, 422))
def audit_switches(
    request: Request,
    axis: Annotated[str | None, Query(description="Only values of this axis.")] = None,
) -> Switches:
    """The live audit per axis and value: decisions, hits, precision with its bounds, and whether the
    value is auto-applied (switched off while the upper bound is under the target)."""
    with session_scope(get_state(request).settings.database_url) as session:
        rows = switches(session, axis)
        items = [Switch(axis=r.axis, value=r.value, enabled=r.enabled, n=r.n, hits=r.hits,
                        precision=r.hits / r.n if r.n else None, lower=r.lower, upper=r.upper,
                        target=r.target, reason=r.reason, changed_at=r.changed_at, updated_at=r.updated_at)
                 for r in rows]
    return Switches(confidence=CONFIDENCE, items=items)
