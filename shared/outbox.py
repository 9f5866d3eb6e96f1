"""The outbox: every producer records an event in ``tagging_events`` before it publishes it.

The broker alone cannot be trusted to keep what it was given: kombu's Redis transport pops a
message (BRPOP) before it records it as unacked, so a worker SIGKILLed between the two commands
loses that message, and a Redis without AOF loses its whole queue when it restarts. The database
can: an event whose row is committed as 'received' is re-sent by the sweeper
(``workers.sweeper.sweep``, a beat entry) until a worker records its outcome. The order is the
contract, the same for the API, ``tagger publish`` and the Python ``Publisher``:

1. record (``received``) and commit: if this fails (database down), nothing was recorded or sent,
   and the caller retries;
2. publish: if this fails (broker down), the rows stay committed and unmarked, and the sweeper
   sends them after ``TAGGER_SWEEP_AFTER_S``; a re-publish by the caller is safe too;
3. mark enqueued and commit: a crash before this is the same as 2 (the sweeper re-sends; the worker
   de-duplicates by ``event_id``).

Step 1 is one statement committed on its own (autocommit): on Postgres the INSERT and, with
deferred marks, the UPDATE of the earlier ones in a WITH clause, so one round trip and one commit.

A busy caller may defer step 3 (:class:`DeferredMarks`): the marks are then written by the same
statement as its next step 1, or by :meth:`DeferredMarks.flush` when it goes idle, so its answer
does not wait for a third round trip. Deferring changes nothing of the above: until its mark is
written, a row is case 3.

Step 3 commits without waiting for its WAL flush on Postgres (``synchronous_commit = off`` for that
transaction only, :data:`ASYNC_MARK`): a mark lost to a database crash is case 3 again, a harmless
re-send; steps 1 and the workers' outcomes keep the server's durable commits. One fsync per call
instead of two.

A message lost after step 3 (the kombu window, a broker that loses data) leaves its row 'received'
with ``enqueued_at`` set; the sweeper re-sends it once that is older than its ``lost_after_s``
(default: the visibility timeout).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.events import mark_enqueued, record_events
from shared.db.session import autocommit_scope, session_scope
from shared.events import ProductUploaded

T = TypeVar("T")

#: Commit the enqueued marks without waiting for the WAL flush (Postgres); a module switch so that
#: bench/ingest.py can measure both in one run.
ASYNC_MARK = True


def _mark_sent(session: Session, event_ids: list[str]) -> None:
    if ASYNC_MARK and session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql("SET LOCAL synchronous_commit = off")
    mark_enqueued(session, event_ids, utcnow())


class DeferredMarks:
    """Event ids sent but not yet marked enqueued, kept for the caller's next record statement
    (step 3 deferred; see the module docstring). Thread-safe: an API process's rounds run on a
    thread pool. Losing them (a crash) costs a re-send by the sweeper, never an event."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def add(self, event_ids: Iterable[str]) -> None:
        with self._lock:
            self._ids.extend(event_ids)

    def take(self) -> list[str]:
        """Every pending id, now the caller's to write (or to :meth:`add` back if it cannot)."""
        with self._lock:
            ids, self._ids = self._ids, []
        return ids

    def flush(self, database_url: str) -> int:
        """Write the pending marks in a transaction of their own; how many. On failure they stay
        pending (the next record statement or flush tries again) and the error propagates."""
        ids = self.take()
        if not ids:
            return 0
        try:
            with session_scope(database_url) as session:
                _mark_sent(session, ids)
        except BaseException:
            self.add(ids)
            raise
        return len(ids)


def record_and_send(database_url: str, events: Sequence[ProductUploaded],
                    send: Callable[[list[dict[str, Any]]], T],
                    marks: DeferredMarks | None = None) -> T | None:
    """Record ``events`` (a known event_id keeps its row), commit, ``send`` the stored payloads that
    need sending, then mark them enqueued. Returns what ``send`` returned, or None when nothing
    needed sending (every event already known and past 'received').

    With ``marks``, step 3 is deferred: the sent ids join ``marks``, and the marks pending there
    are written by this call's record statement (they go back to ``marks`` if it fails).

    Exceptions propagate: from the record step (nothing recorded, nothing sent), from ``send`` (the
    rows are committed; the sweeper sends them), from the mark step (sent; the sweeper will send
    them once more, a harmless duplicate)."""
    earlier = marks.take() if marks is not None else []
    try:
        # One statement records the events and marks the earlier ones (Postgres; a durable commit,
        # step 1's), committed on its own: one round trip. A known event still 'received' is read
        # by a second statement, after it.
        with autocommit_scope(database_url) as session:
            to_send = record_events(session, events, utcnow(), mark=earlier)
    except BaseException:
        if marks is not None:
            marks.add(earlier)
        raise
    if not to_send:
        return None
    result = send(to_send)
    sent = [p["event_id"] for p in to_send]
    if marks is not None:
        marks.add(sent)
        return result
    with session_scope(database_url) as session:
        _mark_sent(session, sent)
    return result
