"""``tagger publish FILE``: validate a JSONL or CSV file of upload events and send the good ones.

Lines are validated by the one event contract (:mod:`shared.events`), the API's: the same
``occurred_at`` bounds (TAGGER_EVENT_*), id rules and JSON bounds.

Exit codes: 0 every line accepted; 1 some lines rejected (the accepted ones are still published);
2 unusable input or broker (nothing, or only part, was published; the message says how many are known
to be queued). A line nested deeper than the JSON bound is not an event at all: the file is unusable
(exit 2, nothing sent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from tqdm import tqdm

from cli.output import fail, out
from shared.errors import TaggerError
from shared.events import InputUnusable, ProductUploaded, Validated, read_events
from shared.publish import BROKER_SETTING, BrokerUnavailable, Publisher

SHOWN_REJECTS = 20
CHUNK = 200  # events per publish call: one Redis pipeline, and the bar still moves


def _send(publisher: Publisher, events: list[ProductUploaded]) -> None:
    """Publish in chunks under a progress bar; on a lost broker, say how many are known to be queued."""
    with tqdm(total=len(events), desc="publishing", unit="event", disable=None) as bar:
        for i in range(0, len(events), CHUNK):
            chunk = events[i:i + CHUNK]
            try:
                publisher.publish(chunk)
            except BrokerUnavailable as exc:
                sent = i + exc.sent  # earlier chunks were confirmed; of this one, only exc.sent
                raise BrokerUnavailable(
                    f"{exc.reason}: the broker at {publisher.broker} was lost; {sent} of "
                    f"{len(events)} accepted events are known to be queued, some of the others may be; "
                    f"check {BROKER_SETTING} and re-run (the worker de-duplicates by event_id, so "
                    "re-sending is safe)", sent=sent, reason=exc.reason,
                ) from exc
            bar.update(len(chunk))


def _summary(result: Validated, published: bool) -> None:
    verb = "published" if published else "accepted (dry run, nothing sent)"
    out.print(f"{len(result.accepted)} {verb}, {len(result.rejected)} rejected", soft_wrap=True)
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
) -> None:
    """Validate a file of product.uploaded events and publish the accepted ones to the tagging queue."""
    try:
        result = read_events(file)
    except InputUnusable as exc:
        raise fail(exc) from None
    if not dry_run and result.accepted:
        from shared.config import get_settings

        settings = get_settings()
        try:
            with Publisher(broker or settings.broker_url, queue or settings.tagging_queue) as publisher:
                publisher.check()
                _send(publisher, result.accepted)
        except TaggerError as exc:
            raise fail(exc) from None
    _summary(result, published=not dry_run)
    if result.rejected:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``tagger publish`` to the root command."""
    app.command("publish")(publish)
