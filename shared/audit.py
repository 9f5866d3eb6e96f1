"""The live audit: a sample of auto-applied tags goes to people, and a value whose live precision is
shown to be under the target stops being auto-applied until reviewers' decisions say otherwise.

Sampling. A share ``TAGGER_AUDIT_RATE`` of ``auto`` tags is marked ``reason='audit'`` and stays
``auto`` (still applied; the review queue lists it first). Which ones is a hash of
(event_id, axis, value), not ``random()``: a redelivered batch marks the same tags, and the sample is
independent of the score, so it is an unbiased sample of what the model applies.

Evidence. Human rows with ``reason`` in ('audit', 'paused') are decisions on tags the model applied
or would have applied: confirmed = hit, rejected = miss. A value's live precision is measured on its
latest ``TAGGER_AUDIT_WINDOW`` such decisions (old ones age out, so a drift is not hidden by a long
good past), with one-sided 95% Clopper–Pearson bounds (:mod:`shared.ml.bounds`).

The rule: a value is switched OFF while the UPPER bound is under the target (with 95% confidence
its precision is below ``TAGGER_TARGET_PRECISION``), and ON whenever it is not. Why the upper bound:
the audit is a test of "this value still keeps its promise", and the burden of proof must lie on
the evidence of failure. The lower bound of a handful of audits is always low (one audit, confirmed:
.05), so "off while lower < target" would switch off every value at its first audit and keep it off
until ~150 straight hits per value. With the upper bound, one miss in the first one or two decisions
is already evidence (if precision were >= .98, a miss that early has probability <= 4%); 1 miss in 3
or 15 in 500 are not (2 in 10 or 16 in 500 are). A false switch-off costs a review, never a wrong
applied tag, and heals itself: while a value is off, its would-be ``auto`` tags go to review as
``reason='paused'`` (all of them, not a sample), and confirmations there bring it back. The verdict
is a pure function of the window, so there is no hidden state; simulated power and delays:
docs/MODEL.md, "Live audit".

The switch state lives in ``auto_switches``, recomputed for a value in the same transaction as a
decision on one of its audit/paused rows (:func:`after_decisions`), or for all (:func:`refresh_all`);
workers read the switched-off set (:func:`switched_off`) every few seconds. Every flip is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import AUDIT_REASONS, AutoSwitch, ProductTag
from shared.db.sql import chunks, dialect_insert
from shared.db.tags import ModelTag
from shared.ml.bounds import CONFIDENCE, precision_lower_bound, precision_upper_bound

log = logging.getLogger("tagger.audit")

AUDIT, PAUSED = AUDIT_REASONS
EVIDENCE = AUDIT_REASONS  # the reasons whose human decisions measure live precision
Pair = tuple[str, str]  # (axis, value)

_switches = cast(sa.Table, AutoSwitch.__table__)


def is_audit_row(reason: sa.ColumnElement[str | None]) -> sa.ColumnElement[bool]:
    """``reason IN ('audit', 'paused')`` with the values inline, not bound, so the planner can prove
    it matches the partial index ``ix_product_tags_audit`` (a bound value cannot)."""
    return reason.in_([sa.literal_column(repr(r)) for r in EVIDENCE])


# --- in the worker: sampling and pausing ------------------------------------------------------------


def draw(event_id: str, axis: str, value: str) -> float:
    """A uniform number in [0, 1) fixed by (event_id, axis, value): the same on every process and run."""
    digest = hashlib.sha256("\x1f".join((event_id, axis, value)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def apply(tags: Iterable[Sequence[object]], event_id: str, off: frozenset[Pair] | set[Pair],
          rate: float) -> list[ModelTag]:
    """The event's model tags after the audit: an ``auto`` tag of a switched-off value becomes
    ``review`` with reason 'paused'; otherwise a ``rate`` share of ``auto`` tags without a reason is
    marked 'audit' (still ``auto``). Every other tag is returned unchanged."""
    out = []
    for raw in tags:
        tag = ModelTag(*raw)  # type: ignore[arg-type]
        if tag.status == "auto":
            if (tag.axis, tag.value) in off:
                tag = tag._replace(status="review", reason=PAUSED)
            elif tag.reason is None and rate > 0 and draw(event_id, tag.axis, tag.value) < rate:
                tag = tag._replace(reason=AUDIT)
        out.append(tag)
    return out


# --- the rule -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """One value's live evidence and what the rule makes of it."""

    axis: str
    value: str
    n: int
    hits: int
    lower: float
    upper: float
    enabled: bool
    reason: str


def judge(pairs: Sequence[Pair], hits: Sequence[int], n: Sequence[int], target: float,
          confidence: float = CONFIDENCE) -> list[Verdict]:
    """The rule, for many values at once: enabled unless the upper bound is under ``target``."""
    k, m = np.asarray(hits, dtype=np.int64), np.asarray(n, dtype=np.int64)
    lower = precision_lower_bound(k, m, confidence)
    upper = precision_upper_bound(k, m, confidence)
    verdicts = []
    for i, (axis, value) in enumerate(pairs):
        on = bool(upper[i] >= target)
        if m[i] == 0:
            why = "no decisions on audit or paused tags yet"
        elif on:
            why = (f"precision not shown under target: upper bound {upper[i]:.4f} >= {target:.4f} "
                   f"({k[i]}/{m[i]} confirmed)")
        else:
            why = (f"precision shown under target: upper bound {upper[i]:.4f} < {target:.4f} "
                   f"({k[i]}/{m[i]} confirmed)")
        verdicts.append(Verdict(axis, value, int(m[i]), int(k[i]), float(lower[i]), float(upper[i]), on, why))
    return verdicts


# --- in the database ------------------------------------------------------------------------------


def evidence(session: Session, window: int,
             pairs: Sequence[Pair] | None = None) -> dict[Pair, tuple[int, int]]:
    """(hits, n) per value over its latest ``window`` decisions on audit/paused rows; only values that
    have any (all of them, or those among ``pairs``)."""
    t = ProductTag
    rank = sa.func.row_number().over(partition_by=(t.axis, t.value),
                                     order_by=(t.updated_at.desc(), t.product_id.desc())).label("rank")
    ranked = sa.select(t.axis, t.value, t.status, rank).where(t.source == "human", is_audit_row(t.reason))
    if pairs is not None:
        if not pairs:
            return {}
        ranked = ranked.where(sa.tuple_(t.axis, t.value).in_(sorted(set(pairs))))
    sub = ranked.subquery()
    hits = sa.func.sum(sa.case((sub.c.status == "confirmed", 1), else_=0))
    query = (sa.select(sub.c.axis, sub.c.value, hits, sa.func.count())
             .where(sub.c.rank <= window).group_by(sub.c.axis, sub.c.value))
    return {(axis, value): (int(k), int(m)) for axis, value, k, m in session.execute(query)}


def _log_flip(v: Verdict, target: float) -> None:
    log.warning("auto_switched_%s axis=%s value=%s n=%d hits=%d lower=%.4f upper=%.4f target=%.4f",
                "on" if v.enabled else "off", json.dumps(v.axis), json.dumps(v.value), v.n, v.hits,
                v.lower, v.upper, target)


def refresh(session: Session, pairs: Iterable[Pair], *, target: float, window: int,
            now: datetime | None = None) -> list[Verdict]:
    """Recompute the switches of ``pairs`` from the evidence and store them; never commits.

    The rows are locked first (created if missing) in key order, so two decisions on one value
    serialise and the second counts the first (Postgres reads committed rows per statement);
    returns the verdicts, and logs each value whose switch flipped."""
    keys = sorted(set(pairs))
    if not keys:
        return []
    now = now or utcnow()
    c = _switches.c
    session.execute(dialect_insert(session, _switches).on_conflict_do_nothing(
        index_elements=[c.axis, c.value]), [
        {"axis": a, "value": v, "enabled": True, "n": 0, "hits": 0, "lower": 0.0, "upper": 1.0,
         "target": target, "reason": "no decisions on audit or paused tags yet", "changed_at": None,
         "updated_at": now} for a, v in keys])
    before = {(a, v): on for a, v, on in session.execute(
        sa.select(c.axis, c.value, c.enabled).where(sa.tuple_(c.axis, c.value).in_(keys))
        .order_by(c.axis, c.value).with_for_update())}
    counts = evidence(session, window, keys)
    verdicts = judge(keys, [counts.get(k, (0, 0))[0] for k in keys],
                     [counts.get(k, (0, 0))[1] for k in keys], target)
    for v in verdicts:
        flipped = before.get((v.axis, v.value), True) != v.enabled
        values = {"enabled": v.enabled, "n": v.n, "hits": v.hits, "lower": v.lower, "upper": v.upper,
                  "target": target, "reason": v.reason, "updated_at": now,
                  **({"changed_at": now} if flipped else {})}
        session.execute(sa.update(_switches).where(c.axis == v.axis, c.value == v.value).values(values))
        if flipped:
            _log_flip(v, target)
    return verdicts


def after_decisions(session: Session, product_id: str, decided: Iterable[Pair], *, target: float,
                    window: int) -> list[Verdict]:
    """Called in the transaction of a person's decisions on ``product_id``: recompute the values whose
    decided rows are audit or paused tags (their evidence just changed); others are left alone."""
    keys = sorted(set(decided))
    if not keys:
        return []
    t = ProductTag
    audited = session.execute(sa.select(t.axis, t.value).where(
        t.product_id == product_id, t.source == "human", is_audit_row(t.reason),
        sa.tuple_(t.axis, t.value).in_(keys))).tuples().all()
    return refresh(session, list(audited), target=target, window=window)


def refresh_all(session: Session, *, target: float, window: int) -> list[Verdict]:
    """Recompute every switch: each value with evidence, and each stored one (after a change of the
    target or the window, or products deleted); never commits."""
    stored = session.execute(sa.select(_switches.c.axis, _switches.c.value)).tuples().all()
    keys = sorted(set(evidence(session, window)) | set(stored))
    now = utcnow()
    return [verdict for chunk in chunks(keys)
            for verdict in refresh(session, chunk, target=target, window=window, now=now)]


def switched_off(session: Session) -> frozenset[Pair]:
    """The values the model must not auto-apply now (what workers poll)."""
    c = _switches.c
    return frozenset(session.execute(sa.select(c.axis, c.value).where(c.enabled.is_(False))).tuples())


def switches(session: Session, axis: str | None = None) -> list[AutoSwitch]:
    """Every stored switch (optionally of one axis), by axis and value."""
    query = sa.select(AutoSwitch).order_by(AutoSwitch.axis, AutoSwitch.value)
    if axis is not None:
        query = query.where(AutoSwitch.axis == axis)
    return list(session.scalars(query))
