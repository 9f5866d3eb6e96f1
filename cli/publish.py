"""``tagger publish FILE``: validate a JSONL or CSV file of upload events and send the good ones.

Lines are validated by the one event contract (:mod:`shared.events`), the API's: the same
``occurred_at`` bounds (TAGGER_EVENT_*), id rules and JSON bounds.

Exit codes: 0 every line accepted; 1 some lines rejected (the accepted ones are still published);
2 unusable input, broker or database (nothing, or only part, was published; the message says how many
are known to be queued or recorded). A line nested deeper than the JSON bound is not an event at all:
the file is unusable (exit 2, nothing sent).

The outbox (:mod:`shared.outbox`, the API's contract): when a database is configured
(``TAGGER_DATABASE_URL`` or ``--database-url``), every event is recorded in ``tagging_events`` and
committed before it is sent, so the sweeper re-sends what the broker loses, including a message a
worker was SIGKILLed holding between kombu's pop and its ack. ``--no-outbox`` sends straight to the
broker: not covered against a worker crash between pop and ack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from tqdm import tqdm

from cli.output import console, fail, out
from shared.errors import TaggerError
from shared.events import InputUnusable, ProductUploaded, Validated, read_events
from shared.publish import BROKER_SETTING, BrokerUnavailable, OutboxUnavailable, Publisher, whole_envelopes

SHOWN_REJECTS = 20
CHUNK = 200  # events per publish call: one Redis pipeline, and the bar still moves


def _send(publisher: Publisher, events: list[ProductUploaded]) -> int:
    """Publish in chunks under a progress bar; on a lost broker, say how many are known to be queued
    (and, with the outbox, recorded). Returns how many events were sent (in envelopes of up to
    TAGGER_EVENTS_PER_MESSAGE per message)."""
    sent_events = 0
    step = whole_envelopes(CHUNK, publisher.events_per_message)
    with tqdm(total=len(events), desc="publishing", unit="event", disable=None) as bar:
        for i in range(0, len(events), step):
            chunk = events[i:i + step]
            try:
                sent_events += len(publisher.publish(chunk))
            except BrokerUnavailable as exc:
                sent = i + exc.sent  # earlier chunks were confirmed; of this one, only exc.sent
                recorded = (f"; {i + len(chunk)} of them are recorded in the outbox and the sweeper "
                            "sends them once the broker is back" if exc.recorded else "")
                raise BrokerUnavailable(
                    f"{exc.reason}: the broker at {publisher.broker} was lost; {sent} of "
                    f"{len(events)} accepted events are known to be queued, some of the others may be"
                    f"{recorded}; check {BROKER_SETTING} and re-run (the worker de-duplicates by "
                    "event_id, so re-sending is safe)", sent=sent, reason=exc.reason,
                ) from exc
            except OutboxUnavailable as exc:
                raise OutboxUnavailable(
                    f"{exc} ({i} of {len(events)} accepted events were recorded and queued before it; "
                    "re-running is safe: known events are not sent twice)"
                ) from exc
            bar.update(len(chunk))
    return sent_events


def _summary(result: Validated, published: bool, skipped: int = 0) -> None:
    verb = "published" if published else "accepted (dry run, nothing sent)"
    out.print(f"{len(result.accepted)} {verb}, {len(result.rejected)} rejected", soft_wrap=True)
    if skipped:
        out.print(f"  {skipped} of them already known to the outbox and past 'received' "
                  "(tagged, failed or dead): not sent again", soft_wrap=True)
    for lineno, reasons in result.rejected[:SHOWN_REJECTS]:
        out.print(f"  line {lineno}: {escape('; '.join(reasons))}", soft_wrap=True)
    if len(result.rejected) > SHOWN_REJECTS:
        out.print(f"  … {len(result.rejected) - SHOWN_REJECTS} more")


def publish(
    file: Annotated[Path, typer.Argument(
        metavar="FILE", show_default=False,
        help="Events as JSONL (.jsonl/.ndjson) or CSV (header row = field names).")],
    broker: Annotated[str | None, typer.Option(
        help=f"Broker URL (default: {BROKER_SETTING}).", show_default=False)] = None,
    queue: Annotated[str | None, typer.Option(
        help="Queue to send to (default: TAGGER_TAGGING_QUEUE, 'tagging').", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(help="Validate only; send nothing.")] = False,
    database_url: Annotated[str | None, typer.Option(
        help="The tagger's database, for the outbox (default: TAGGER_DATABASE_URL).",
        show_default=False)] = None,
    outbox: Annotated[bool | None, typer.Option(
        "--outbox/--no-outbox",
        help="Record each event in the database before sending it, so the sweeper re-sends what the "
             "broker loses (default: on when a database is configured). --no-outbox: straight to the "
             "broker, not covered against a worker crash between pop and ack.",
        show_default=False)] = None,
) -> None:
    """Validate a file of product.uploaded events and publish the accepted ones to the tagging queue."""
    try:
        result = read_events(file)
    except InputUnusable as exc:
        raise fail(exc) from None
    skipped = 0
    if not dry_run and result.accepted:
        from shared.config import get_settings

        settings = get_settings()
        configured = database_url is not None or "database_url" in settings.model_fields_set
        use_outbox = configured if outbox is None else outbox
        if not use_outbox:
            console.print("note: sent without the outbox (no TAGGER_DATABASE_URL, or --no-outbox): not "
                          "covered against a worker crash between pop and ack", soft_wrap=True)
        try:
            with Publisher(broker or settings.broker_url, queue or settings.tagging_queue,
                           database_url=(database_url or settings.database_url) if use_outbox else None,
                           events_per_message=settings.events_per_message) as publisher:
                publisher.check()
                skipped = len(result.accepted) - _send(publisher, result.accepted)
        except TaggerError as exc:
            raise fail(exc) from None
    _summary(result, published=not dry_run, skipped=skipped)
    if result.rejected:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``tagger publish`` to the root command."""
    app.command("publish")(publish)
