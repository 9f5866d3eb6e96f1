"""``tagger publish FILE``: validate a JSONL or CSV file of upload events and send the good ones.

Exit codes: 0 every line accepted; 1 some lines rejected (the accepted ones are still published);
2 unusable input or broker (nothing, or only part, was published; the message says how many are known
to be queued).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from tqdm import tqdm

from shared.errors import TaggerError
from shared.events import ProductUploaded, format_errors
from shared.publish import BROKER_SETTING, BrokerUnavailable, Publisher

console = Console(stderr=True)
out = Console()

SHOWN_REJECTS = 20
CHUNK = 200  # events per publish call: one Redis pipeline, and the bar still moves
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
CSV_SUFFIXES = {".csv"}


class InputUnusable(Exception):
    """The file as a whole cannot be read (missing, wrong type, wrong encoding)."""


@dataclass
class Validated:
    """The outcome of reading a file: events to send and, per rejected line, its reasons."""

    accepted: list[ProductUploaded] = field(default_factory=list)
    rejected: list[tuple[int, list[str]]] = field(default_factory=list)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, f"line: not valid JSON ({exc.msg} at column {exc.colno})"
                continue
            yield lineno, row if isinstance(row, dict) else "line: expected a JSON object"


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            return
        start = reader.line_num + 1
        for row in reader:
            if None in row:
                yield start, "line: more cells than header columns"
            else:
                # An empty cell means "absent", so optional fields stay None and required ones say missing.
                yield start, {k: v for k, v in row.items() if k and v not in (None, "")}
            start = reader.line_num + 1


def read_events(path: Path) -> Validated:
    """Validate every line of a JSONL or CSV file; never stops at the first bad line."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        rows = _jsonl_rows(path)
    elif suffix in CSV_SUFFIXES:
        rows = _csv_rows(path)
    else:
        raise InputUnusable(f"{path}: unknown extension {suffix or '(none)'!r}; use .jsonl, .ndjson or .csv")
    result = Validated()
    try:
        for lineno, row in rows:
            if isinstance(row, str):
                result.rejected.append((lineno, [row]))
                continue
            try:
                result.accepted.append(ProductUploaded.model_validate(row))
            except ValidationError as exc:
                result.rejected.append((lineno, format_errors(exc)))
    except FileNotFoundError:
        raise InputUnusable(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputUnusable(f"{path}: cannot read ({exc})") from None
    return result


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
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(code=2) from None
    if not dry_run and result.accepted:
        from shared.config import get_settings

        settings = get_settings()
        try:
            with Publisher(broker or settings.broker_url, queue or settings.tagging_queue) as publisher:
                publisher.check()
                _send(publisher, result.accepted)
        except TaggerError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(code=2) from None
    _summary(result, published=not dry_run)
    if result.rejected:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``tagger publish`` to the root command."""
    app.command("publish")(publish)
