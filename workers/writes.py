"""A batch's one write, and what happens when it fails: whose fault it was decides.

- The database is unreachable (an outage): not the events' fault. The batch keeps its results,
  the worker turns not-ready and waits for the database (:mod:`workers.readiness`), then writes
  the same results: no re-inference, no attempt counted, nothing dead-lettered.
- A conflict (deadlock, serialization failure): written again as it is.
- The database refuses some event's data: the batch is split in halves, each written in its own
  transaction, until the events that cause the refusal stand alone; those are dead-lettered with
  the error's kind and column (:func:`shared.db.faults.describe`), their batch-mates are written.
- Anything else is a bug: narrowed down the same way, and the event left alone counts an attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC

from shared.config import Settings
from shared.db.events import record_dead_letter
from shared.db.faults import Fault, classify, describe
from shared.db.session import session_scope
from shared.db.tags import TaggingResult, apply_batch
from workers.deliveries import Delivery, dead_letter, payload
from workers.readiness import mark_database, wait_for_database

log = logging.getLogger("workers.writes")

CONFLICT_RETRIES = 5


class OutageTimeout(Exception):
    """The database stayed unreachable longer than ``outage_max_wait_s``: hand the batch back."""


@dataclass
class WriteReport:
    """What the write did beyond the batch: events refused by the database (dead-lettered here) and
    events whose write failed for no known reason (to be retried by the caller, attempts counted)."""

    refused: list[tuple[Delivery, str]] = field(default_factory=list)
    failed: list[tuple[Delivery, str]] = field(default_factory=list)
    transactions: int = 0
    waited_s: float = 0.0


def _suspect(result: TaggingResult) -> str:
    """The field a client-side refusal most likely came from, when it can be told (a date that
    cannot be stored in UTC; the event contract refuses those at every door, this is the last one)."""
    try:
        result.occurred_at.astimezone(UTC)
    except (OverflowError, ValueError):
        return "; occurred_at: out of range in UTC"
    return ""


def _transaction(s: Settings, pairs: Sequence[tuple[Delivery, TaggingResult]],
                 given_up: Sequence[Delivery], report: WriteReport) -> None:
    """One transaction; waits out outages and retries conflicts; raises the event-caused errors."""
    conflicts = 0
    while True:
        report.transactions += 1
        try:
            with session_scope(s.database_url) as session:
                apply_batch(session, [r for _, r in pairs])
                for d in given_up:
                    dead_letter(session, d, d.reason or "")
            mark_database(True)
            return
        except Exception as exc:
            fault = classify(exc)
            if fault is Fault.RETRY and conflicts < CONFLICT_RETRIES:
                conflicts += 1
                time.sleep(0.05 * 2 ** conflicts)
                continue
            if fault is not Fault.INFRA:
                raise
            log.warning("write_waits_for_database n=%d error=%s", len(pairs) + len(given_up), describe(exc))
            t0 = time.monotonic()
            back = wait_for_database(s.database_url, s.outage_backoff_max_s, s.outage_max_wait_s)
            report.waited_s += time.monotonic() - t0
            if not back:
                raise OutageTimeout(describe(exc)) from None


def write(s: Settings, pairs: Sequence[tuple[Delivery, TaggingResult]],
          given_up: Sequence[Delivery] = ()) -> WriteReport:
    """Write ``pairs`` (and dead-letter ``given_up``), narrowing a refused write down to its events.

    Raises :class:`OutageTimeout` when the database does not come back in time (nothing of the
    batch is then known to be written; the caller hands every delivery back unacked)."""
    report = WriteReport()
    try:
        _transaction(s, pairs, given_up, report)
        return report
    except OutageTimeout:
        raise
    except Exception as exc:
        log.warning("batch_write_refused n=%d error=%s: narrowing down", len(pairs), describe(exc))
        first = exc
    if given_up:  # malformed messages were not the cause (their dead letter is plain JSON): alone
        _transaction(s, [], given_up, report)
        try:
            _transaction(s, pairs, (), report)
            return report
        except OutageTimeout:
            raise
        except Exception as exc:
            first = exc
    _narrow(s, list(pairs), first, report)
    return report


def _narrow(s: Settings, pairs: list[tuple[Delivery, TaggingResult]], exc: Exception,
            report: WriteReport) -> None:
    """``pairs`` failed together with ``exc``. Bisect: each half in its own transaction, until the
    events that fail alone are found."""
    if len(pairs) > 1:
        mid = len(pairs) // 2
        for half in (pairs[:mid], pairs[mid:]):
            try:
                _transaction(s, half, (), report)
            except OutageTimeout:
                raise
            except Exception as half_exc:
                _narrow(s, half, half_exc, report)
        return
    if not pairs:
        return
    (d, result), = pairs
    reason = describe(exc) + _suspect(result)
    if classify(exc) is not Fault.EVENT:
        log.error("write_failed event_id=%s error=%s", d.event_id, reason)
        report.failed.append((d, reason))
        return
    log.warning("write_refused event_id=%s reason=%s", d.event_id, reason)
    try:
        _transaction(s, [], [replace(d, reason=reason)], report)
    except OutageTimeout:
        raise
    except Exception as dl_exc:  # even its event row is refused: keep the message, without that row
        log.warning("dead_letter_row_refused event_id=%s error=%s", d.event_id, describe(dl_exc))
        with session_scope(s.database_url) as session:
            record_dead_letter(session, None, payload(d), reason, d.attempt)
    report.refused.append((d, reason))
