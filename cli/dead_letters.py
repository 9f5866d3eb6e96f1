"""``tagger dead-letters list | show | replay``: messages the workers gave up on, and sending them again.

Database from TAGGER_DATABASE_URL, broker from TAGGER_BROKER_URL (replay only). ``list`` never prints a
payload (seller titles, image URIs); ``show`` does. A replay goes through the normal path (the event's
row back to 'received', published, marked enqueued) and is idempotent: see docs/DEAD-LETTERS.md.

Exit codes: 0 done (dead letters skipped as already replayed or already tagged included); 1 some ids
were not found or not replayable, or the broker was lost mid-way (those events are recorded as
'received' and the sweeper sends them); 2 bad arguments, or the database or broker unusable before
anything changed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.padding import Padding
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from cli.output import console, out
from cli.output import fail as _fail
from shared.errors import TaggerError

if TYPE_CHECKING:
    from shared.db.dead_letters import Filters, Outcome, ReplayReport, Summary

dead_app = typer.Typer(
    no_args_is_help=True,
    help="Dead letters: messages the workers gave up on; list, show, replay through the queue.",
)

CHUNK = 500  # dead letters per replay transaction and publish call
SHOWN_SKIPS = 20
SHOWN_REASON = 140  # characters of a reason in 'list' (about two lines); 'show' has it all
_DURATION = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def _time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (no offset: UTC) or a duration back from now (30m, 24h, 7d)."""
    if value is None:
        return None
    if match := _DURATION.match(value.strip()):
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        parsed = datetime.fromisoformat(value.strip())
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise typer.BadParameter("expected an ISO 8601 time (e.g. 2026-01-31T12:00, UTC unless it has an "
                                 "offset) or a duration back from now (30m, 24h, 7d)",
                                 param_hint=option) from None


Reason = Annotated[str | None, typer.Option(help="Reason contains this text (any case), e.g. an error kind.")]
Since = Annotated[str | None, typer.Option(help="Created at or after: ISO time (UTC) or 30m/24h/7d ago.")]
Until = Annotated[str | None, typer.Option(help="Created before: ISO time (UTC) or 30m/24h/7d ago.")]
Product = Annotated[str | None, typer.Option("--product", help="Only this product_id.")]
Event = Annotated[str | None, typer.Option("--event", help="Only this event_id.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of text.")]


def _filters(reason: str | None, since: str | None, until: str | None, product: str | None,
             event: str | None, replayed: bool | None = None) -> Filters:
    from shared.db.dead_letters import Filters

    return Filters(reason=reason, since=_time(since, "--since"), until=_time(until, "--until"),
                   product_id=product, event_id=event, replayed=replayed)


def _summary_doc(s: Summary) -> dict[str, Any]:
    return {"id": s.id, "event_id": s.event_id, "product_id": s.product_id, "event_status": s.event_status,
            "reason": s.reason, "attempts": s.attempts, "created_at": s.created_at.isoformat(),
            "replayed_at": s.replayed_at.isoformat() if s.replayed_at else None, "replays": s.replays}


def _print_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))  # plain: never wrapped or coloured


@dead_app.command("list")
def list_(
    reason: Reason = None, since: Since = None, until: Until = None, product: Product = None,
    event: Event = None,
    replayed: Annotated[bool | None, typer.Option(
        "--replayed/--not-replayed", help="Only replayed ones, or only never replayed.",
        show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    before: Annotated[int | None, typer.Option(min=1, help="Only ids below this (the next page).")] = None,
    as_json: AsJson = False,
) -> None:
    """Dead letters, newest first: id, when, event, its status now, replays, reason (never the payload)."""
    from shared.db.dead_letters import list_dead_letters
    from shared.db.session import session_scope

    filters = _filters(reason, since, until, product, event, replayed)
    try:
        with session_scope() as session:
            rows = list_dead_letters(session, filters, before=before, limit=limit + 1)
    except (TaggerError, SQLAlchemyError) as exc:
        raise _fail(exc) from None
    more, rows = len(rows) > limit, rows[:limit]
    if as_json:
        _print_json({"items": [_summary_doc(r) for r in rows], "next_before": rows[-1].id if more else None})
        return
    if not rows:
        console.print("no dead letters match")
    # Two lines per dead letter: ids and state, then the reason indented; fits 80 columns without
    # squeezing any field into a sliver, and the full text is one 'show' or '--json' away.
    w = max([2, *(len(str(r.id)) for r in rows)])
    if rows:
        out.print(f"{'id':>{w}}  created (UTC)     status    replays  event (product)", highlight=False)
    for r in rows:
        product = f" ({r.product_id})" if r.product_id else ""
        out.print(f"{r.id:>{w}}  {r.created_at:%Y-%m-%d %H:%M}  {r.event_status or '-':<8}  {r.replays:>7}  "
                  f"{escape(r.event_id or '-')}{escape(product)}", highlight=False, soft_wrap=True)
        reason = r.reason if len(r.reason) <= SHOWN_REASON else r.reason[:SHOWN_REASON - 1] + "…"
        out.print(Padding(Text(reason, overflow="fold"), (0, 0, 0, w + 2), expand=False))  # wraps indented
    if more:
        console.print(f"more: add --before {rows[-1].id}")


@dead_app.command()
def show(
    dead_letter_id: Annotated[int, typer.Argument(metavar="ID", min=1, help="The dead letter's id.")],
    as_json: AsJson = False,
) -> None:
    """One dead letter with its stored message (private: seller titles, URIs) and whether it can replay."""
    from shared.db.dead_letters import get_dead_letter
    from shared.db.session import session_scope

    try:
        with session_scope() as session:
            detail = get_dead_letter(session, dead_letter_id)
    except (TaggerError, SQLAlchemyError) as exc:
        raise _fail(exc) from None
    if detail is None:
        raise _fail(f"no dead letter {dead_letter_id}")
    payload = detail.payload_document()
    doc = {**_summary_doc(detail.summary), "replayable": not detail.problems,
           "problems": list(detail.problems), "payload": payload}
    if as_json:
        _print_json(doc)
        return
    for key in ("id", "event_id", "product_id", "event_status", "reason", "attempts", "created_at",
                "replayed_at", "replays", "replayable"):
        out.print(f"{key}: {escape(str(doc[key]))}", soft_wrap=True)
    for problem in detail.problems:
        out.print(f"  problem: {escape(problem)}", soft_wrap=True)
    out.print("payload:")
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False) if not isinstance(payload, str) else payload)


def _outcome_doc(o: Outcome) -> dict[str, Any]:
    return {"id": o.id, "event_id": o.event_id, "reason": o.skipped, "errors": list(o.errors)}


def _report(report: ReplayReport, as_json: bool) -> None:
    skipped = report.skipped
    if as_json:
        _print_json({"dry_run": report.dry_run, "queued": report.queued,
                     "replayed": [{"id": o.id, "event_id": o.event_id} for o in report.replayed],
                     "skipped": [_outcome_doc(o) for o in skipped]})
        return
    why = Counter(o.skipped for o in skipped)
    verb = "would replay" if report.dry_run else "replayed"
    detail = f" ({', '.join(f'{k} {n}' for k, n in sorted(why.items()))})" if why else ""
    out.print(f"{verb} {len(report.replayed)}, skipped {len(skipped)}{detail}", soft_wrap=True)
    for o in skipped[:SHOWN_SKIPS]:
        errors = f": {'; '.join(o.errors)}" if o.errors else ""
        out.print(f"  {o.id} {escape(o.event_id or '-')}: {o.skipped}{escape(errors)}", soft_wrap=True)
    if len(skipped) > SHOWN_SKIPS:
        out.print(f"  … {len(skipped) - SHOWN_SKIPS} more (--json lists all)")


@dead_app.command()
def replay(
    ids: Annotated[list[int] | None, typer.Argument(
        metavar="IDS", show_default=False, help="Dead letter ids (from 'list').")] = None,
    reason: Reason = None, since: Since = None, until: Until = None, product: Product = None,
    event: Event = None,
    all_matching: Annotated[bool, typer.Option(
        "--all-matching", help="Replay every dead letter the filters match (all without one).")] = False,
    dry_run: Annotated[bool, typer.Option(help="Say what would be replayed; change, send nothing.")] = False,
    force: Annotated[bool, typer.Option(
        help="Replay ones already replayed too (an event already tagged is never re-sent).")] = False,
    as_json: AsJson = False,
) -> None:
    """Send dead letters back through the tagging queue: the event becomes 'received' (attempts 0), is
    published and marked enqueued. Once each: already replayed ones are skipped unless --force."""
    from shared.config import get_settings
    from shared.db import dead_letters as store
    from shared.db.session import session_scope
    from shared.publish import Publisher

    filtered = any(v is not None for v in (reason, since, until, product, event))
    if ids and (filtered or all_matching):
        raise _fail("give IDS or filters with --all-matching, not both")
    if not ids and not all_matching:
        raise _fail("give dead letter IDS, or filters (--reason, --since, --until, --product, --event) "
                    "with --all-matching to replay every match")
    if ids and min(ids) < 1:
        raise _fail(f"IDS: {min(ids)} is not a dead letter id (ids start at 1)")
    filters = _filters(reason, since, until, product, event)
    settings = get_settings()
    report = store.ReplayReport(dry_run=dry_run)
    publisher = None if dry_run else Publisher.from_settings(settings)
    try:
        if publisher is not None:
            publisher.check()  # a bad broker fails here, before anything is changed
        with session_scope() as session:
            count = len(set(ids)) if ids else store.count_matching(session, filters)
        with tqdm(total=count, desc="replaying", unit="letter", disable=None) as bar:
            for part in _parts(sorted(set(ids)) if ids else None, filters):
                done = store.replay(settings.database_url, publisher, part, force=force, dry_run=dry_run,
                                    settings=settings)
                report.outcomes.extend(done.outcomes)
                report.queued = report.queued and done.queued
                bar.update(len(part))
    except (TaggerError, SQLAlchemyError) as exc:
        raise _fail(exc) from None
    finally:
        if publisher is not None:
            publisher.close()
    _report(report, as_json)
    if not report.queued:
        console.print("warning: the broker was lost; the replayed events are recorded as 'received' and "
                      "the sweeper sends them once it is back")
    if not report.queued or any(o.skipped in ("not_found", "not_replayable") for o in report.skipped):
        raise typer.Exit(code=1)


def _parts(ids: list[int] | None, filters: Filters) -> Iterator[list[int]]:
    """The ids to replay in parts of CHUNK: the given ones, or every match by ascending id (keyset, so
    rows replayed meanwhile are not visited twice)."""
    from shared.db.dead_letters import matching_ids
    from shared.db.session import session_scope

    if ids is not None:
        for start in range(0, len(ids), CHUNK):
            yield ids[start:start + CHUNK]
        return
    after = None
    while True:
        with session_scope() as session:
            part = matching_ids(session, filters, after=after, limit=CHUNK)
        if not part:
            return
        yield part
        after = part[-1]


def register(app: typer.Typer) -> None:
    """Add the ``dead-letters`` group to the root ``tagger`` command."""
    app.add_typer(dead_app, name="dead-letters")
