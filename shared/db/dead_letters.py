"""Dead letters, operable: list them, show one, and replay them through the normal path.

A replay is the API's ingest again (api/ingest.py): the event's ``tagging_events`` row is reset to
'received' (attempts 0, the stored payload, ``enqueued_at`` NULL) and committed, then the event is
published with :class:`shared.publish.Publisher` and marked enqueued. A broker lost in between costs
latency only: the row stays 'received' and the sweeper (workers/sweeper.py) sends it later.

Idempotent: a dead letter is replayed once (``replayed_at``, ``replays``); replaying it again is
skipped as ``already_replayed`` unless forced, and an event already 'tagged' (another copy
succeeded) is never sent again. The dead-letter rows are locked while a replay decides, so two
replays at once send an event once. When the replayed event dies again, the worker's upsert
(:func:`shared.db.events.record_dead_letter`) rewrites reason and attempts on the same row and keeps
``replayed_at``/``replays``: the history stays, and another replay needs ``force``.

Query helpers take the session first and never commit; :func:`replay` owns its transactions
because it must commit before it publishes. Payloads (seller titles, URIs) leave this module only
through :func:`get_dead_letter`; nothing here logs them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db.base import utcnow
from shared.db.events import mark_enqueued
from shared.db.models import DeadLetter, TaggingEvent
from shared.db.session import session_scope
from shared.db.sql import chunks, dialect_insert
from shared.events import JsonRefused, ProductUploaded, format_errors, parse_json
from shared.publish import BrokerUnavailable, Publisher

log = logging.getLogger("shared.db.dead_letters")

MAX_ID = 2**31 - 1  # dead_letters.id is a 32-bit integer: a larger number names nothing
# Why a dead letter was not replayed; every outcome names one of these or "replayed".
SKIP_REASONS = ("not_found", "not_replayable", "already_replayed", "already_tagged", "duplicate")


@dataclass(frozen=True)
class Filters:
    """What ``list`` and a filtered ``replay`` select; every field narrows, None leaves it open."""

    reason: str | None = None  # case-insensitive substring of the reason (e.g. an error kind)
    since: datetime | None = None  # created at or after (timezone-aware)
    until: datetime | None = None  # created before
    product_id: str | None = None  # the event's product (dead letters of malformed messages have none)
    event_id: str | None = None
    replayed: bool | None = None  # True: only replayed ones; False: only never replayed


@dataclass(frozen=True)
class Summary:
    """A dead letter as ``list`` shows it: ids, reason and history, never the payload."""

    id: int
    event_id: str | None
    product_id: str | None
    event_status: str | None  # the event's tagging_events status now (None: no row)
    reason: str
    attempts: int
    created_at: datetime
    replayed_at: datetime | None
    replays: int


@dataclass(frozen=True)
class Detail:
    """One dead letter with its payload as stored, and whether it can be replayed as it stands."""

    summary: Summary
    payload: str
    problems: tuple[str, ...]  # why the payload is not replayable ("field: reason"); empty: it is

    def payload_document(self) -> Any:
        """The stored message as JSON (bounded parse), or the raw text when it is not JSON."""
        try:
            return parse_json(self.payload)
        except ValueError:
            return self.payload


class NotReplayable(ValueError):
    """The stored message is not a valid product.uploaded event; ``errors`` are ``field: reason`` lines."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


@dataclass(frozen=True)
class Outcome:
    """What a replay did with one dead letter: ``replayed`` (or would, in a dry run), else skipped."""

    id: int
    event_id: str | None
    replayed: bool
    skipped: str | None = None  # one of SKIP_REASONS
    errors: tuple[str, ...] = ()  # not_replayable: the payload's field errors


@dataclass
class ReplayReport:
    """The outcome per dead letter, in id order, and whether the replayed events reached the broker."""

    outcomes: list[Outcome] = field(default_factory=list)
    queued: bool = True  # False: recorded as 'received' but not known queued; the sweeper sends them
    dry_run: bool = False

    @property
    def replayed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.replayed]

    @property
    def skipped(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.replayed]


# --- reading ---------------------------------------------------------------------------------------

def _summaries() -> sa.Select[Any]:
    return (sa.select(DeadLetter.id, DeadLetter.event_id, TaggingEvent.product_id,
                      TaggingEvent.status.label("event_status"), DeadLetter.reason, DeadLetter.attempts,
                      DeadLetter.created_at, DeadLetter.replayed_at, DeadLetter.replays)
            .outerjoin(TaggingEvent, TaggingEvent.event_id == DeadLetter.event_id))


def _where(query: sa.Select[Any], f: Filters) -> sa.Select[Any]:
    if f.reason:
        query = query.where(sa.func.lower(DeadLetter.reason).contains(f.reason.lower(), autoescape=True))
    if f.since is not None:
        query = query.where(DeadLetter.created_at >= f.since)
    if f.until is not None:
        query = query.where(DeadLetter.created_at < f.until)
    if f.product_id is not None:
        query = query.where(TaggingEvent.product_id == f.product_id)
    if f.event_id is not None:
        query = query.where(DeadLetter.event_id == f.event_id)
    if f.replayed is not None:
        replayed = DeadLetter.replayed_at.is_not(None)
        query = query.where(replayed if f.replayed else ~replayed)
    return query


def list_dead_letters(session: Session, filters: Filters = Filters(), *, before: int | None = None,
                      limit: int = 50) -> list[Summary]:
    """Dead letters matching ``filters``, newest first (by id); page with ``before`` = the last id seen."""
    query = _where(_summaries(), filters)
    if before is not None:
        query = query.where(DeadLetter.id < before)
    rows = session.execute(query.order_by(DeadLetter.id.desc()).limit(limit))
    return [Summary(**row._asdict()) for row in rows]


def get_dead_letter(session: Session, dead_letter_id: int, settings: Settings | None = None) -> Detail | None:
    """One dead letter with its payload (private: seller titles and URIs), or None if there is none."""
    row = session.execute(_summaries().add_columns(DeadLetter.payload)
                          .where(DeadLetter.id == dead_letter_id)).one_or_none()
    if row is None:
        return None
    values = row._asdict()
    payload = values.pop("payload")
    try:
        parse_payload(payload, settings)
        problems: tuple[str, ...] = ()
    except NotReplayable as exc:
        problems = tuple(exc.errors)
    return Detail(Summary(**values), payload, problems)


def matching_ids(session: Session, filters: Filters, *, after: int | None = None,
                 limit: int = 500) -> list[int]:
    """Ids of dead letters matching ``filters`` above ``after``, ascending: a filtered replay's pages."""
    query = _where(sa.select(DeadLetter.id).outerjoin(
        TaggingEvent, TaggingEvent.event_id == DeadLetter.event_id), filters)
    if after is not None:
        query = query.where(DeadLetter.id > after)
    return list(session.scalars(query.order_by(DeadLetter.id).limit(limit)))


def count_matching(session: Session, filters: Filters) -> int:
    """How many dead letters match ``filters`` (a filtered replay's progress total)."""
    query = _where(sa.select(sa.func.count()).select_from(DeadLetter).outerjoin(
        TaggingEvent, TaggingEvent.event_id == DeadLetter.event_id), filters)
    return int(session.scalar(query) or 0)


def parse_payload(payload: str, settings: Settings | None = None) -> ProductUploaded:
    """The event a stored message carried (``{"args": .., "kwargs": {"event": {..}, ..}}``), validated
    by today's contract; raises NotReplayable with ``field: reason`` lines."""
    try:
        doc = parse_json(payload)
    except JsonRefused as exc:
        raise NotReplayable([f"payload: {exc}"]) from None
    kwargs = doc.get("kwargs") if isinstance(doc, dict) else None
    event = kwargs.get("event") if isinstance(kwargs, dict) else None
    if not isinstance(event, dict):
        raise NotReplayable(["payload: not a tagging message (no kwargs.event object)"])
    try:
        return ProductUploaded.model_validate(event, context={"settings": settings} if settings else None)
    except ValidationError as exc:
        raise NotReplayable(format_errors(exc)) from None


# --- replaying -------------------------------------------------------------------------------------

def _reset_event(session: Session, event: ProductUploaded, now: datetime) -> bool:
    """Make the event's row 'received' again, as the API would record it; False if it is tagged."""
    table = TaggingEvent.__table__
    values = {"event_id": event.event_id, "product_id": event.product_id, "status": "received",
              "attempts": 0, "last_error": None, "image_error": None, "model_version": None,
              "received_at": now, "finished_at": None, "payload": event.model_dump(mode="json"),
              "enqueued_at": None}
    stmt = dialect_insert(session, table).values(values)  # type: ignore[arg-type]
    # received_at = now: the sweeper's grace period starts at the replay, as for a new event.
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.event_id],
        set_={k: stmt.excluded[k] for k in values if k != "event_id"},
        where=table.c.status != "tagged",  # decided under the row lock: a worker's tagging wins
    )
    return session.execute(stmt.returning(table.c.event_id)).first() is not None


def prepare_replay(session: Session, ids: Sequence[int], *, force: bool = False, dry_run: bool = False,
                   settings: Settings | None = None, now: datetime | None = None,
                   ) -> list[tuple[Outcome, ProductUploaded | None]]:
    """Decide each dead letter's replay and (unless ``dry_run``) record it: the event's row reset to
    'received', ``replayed_at``/``replays`` on the dead letter. Never commits or publishes; returns
    each outcome in id order with the event to publish once committed."""
    now = now or utcnow()
    wanted = sorted({i for i in ids if 1 <= i <= MAX_ID})
    rows: dict[int, DeadLetter] = {}
    for chunk in chunks(wanted):  # locked in id order: a concurrent replay waits, then sees replayed_at
        query = sa.select(DeadLetter).where(DeadLetter.id.in_(chunk)).order_by(DeadLetter.id)
        rows.update((dl.id, dl) for dl in session.scalars(query.with_for_update()))
    events: dict[int, ProductUploaded] = {}
    errors: dict[int, list[str]] = {}
    for dl_id, dl in rows.items():
        try:
            events[dl_id] = parse_payload(dl.payload, settings)
        except NotReplayable as exc:
            errors[dl_id] = exc.errors
    statuses: dict[str, str] = {}
    for chunk in chunks(sorted({e.event_id for e in events.values()})):
        statuses.update(session.execute(sa.select(TaggingEvent.event_id, TaggingEvent.status)
                                        .where(TaggingEvent.event_id.in_(chunk))).tuples().all())
    out: list[tuple[Outcome, ProductUploaded | None]] = []
    sent: set[str] = set()
    for dl_id in sorted(set(ids)):
        dl = rows.get(dl_id)
        event = events.get(dl_id)
        if dl is None:
            out.append((Outcome(dl_id, None, False, "not_found"), None))
        elif event is None:
            out.append((Outcome(dl_id, dl.event_id, False, "not_replayable", tuple(errors[dl_id])), None))
        elif statuses.get(event.event_id) == "tagged":
            out.append((Outcome(dl_id, event.event_id, False, "already_tagged"), None))
        elif dl.replayed_at is not None and not force:
            out.append((Outcome(dl_id, event.event_id, False, "already_replayed"), None))
        elif event.event_id in sent:  # two dead letters of one event (a malformed copy kept no id)
            out.append((Outcome(dl_id, event.event_id, False, "duplicate"), None))
        elif dry_run:
            sent.add(event.event_id)
            out.append((Outcome(dl_id, event.event_id, True), event))
        elif not _reset_event(session, event, now):  # tagged since the status was read
            out.append((Outcome(dl_id, event.event_id, False, "already_tagged"), None))
        else:
            sent.add(event.event_id)
            dl.replayed_at = now
            dl.replays = (dl.replays or 0) + 1
            out.append((Outcome(dl_id, event.event_id, True), event))
    session.flush()
    return out


def replay(database_url: str, publisher: Publisher | None, ids: Sequence[int], *, force: bool = False,
           dry_run: bool = False, settings: Settings | None = None) -> ReplayReport:
    """Replay these dead letters: record (commit), publish, mark enqueued; the API's order, so a lost
    broker leaves them 'received' for the sweeper (``queued`` False), never lost. Idempotent."""
    with session_scope(database_url) as session:
        prepared = prepare_replay(session, ids, force=force, dry_run=dry_run, settings=settings)
        if dry_run:
            session.rollback()  # nothing was written; say so to the database too
    report = ReplayReport(outcomes=[o for o, _ in prepared], dry_run=dry_run)
    events = [e for o, e in prepared if o.replayed and e is not None]
    if events and not dry_run:
        if publisher is None:
            raise ValueError("replay needs a publisher unless it is a dry run")
        try:
            publisher.publish(events)
        except BrokerUnavailable as exc:
            log.warning("dead_letters_not_queued n=%d known_queued=%d broker=%s",
                        len(events), exc.sent, publisher.broker)
            report.queued = False
        else:
            with session_scope(database_url) as session:
                mark_enqueued(session, [e.event_id for e in events], utcnow())
    if not dry_run:
        log.info("dead_letters_replayed replayed=%d skipped=%d queued=%s",
                 len(report.replayed), len(report.skipped), report.queued)
    return report
