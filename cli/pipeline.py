"""Operator commands for the pipeline: ``tagger worker``, ``tagger flower``, ``tagger backfill``,
``tagger retrain``."""

from __future__ import annotations

import math
import os
import secrets
from typing import Annotated, Any

import typer

from cli.output import console
from cli.output import fail as _fail


def worker(
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    pool: Annotated[str, typer.Option(help="threads or solo: CUDA does not survive a fork.")] = "threads",
    queue: Annotated[str | None, typer.Option(
        help="Queue to consume: the tagging queue (default) or the training queue (retrains).")] = None,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", "-c", min=0,
        help="Tasks run at once. Tagging (0): 2 (one batch's fetch and write overlap the other's model, "
             "on a GPU as on the CPU; on the CPU TAGGER_TORCH_THREADS then defaults to cores / 2). "
             "Training (0): 2, so sweeps run beside a retrain.")] = 0,
) -> None:
    """Run a worker: tagging (one process per GPU, model loaded once at start) or training."""
    from shared.config import get_settings
    from shared.ml.device import worker_layout
    from workers.app import create_app

    s = get_settings()
    q = queue or s.tagging_queue
    if q == s.tagging_queue:
        concurrency, threads = worker_layout(s.device, concurrency, s.torch_threads)
        if threads and not s.torch_threads:
            s = s.model_copy(update={"torch_threads": threads})  # the model loads with these settings
        console.print(f"tagging worker: {concurrency} batch(es) at once, torch threads "
                      f"{threads or 'default'}, device {s.device}")
    else:  # training: a retrain holds one thread for its hour; the other runs the sweeps and checks
        concurrency = concurrency or 2
    create_app(s).worker_main(["worker", "-Q", q, "-P", pool, "-c", str(concurrency),
                               f"--loglevel={loglevel}", "-E", "--without-gossip", "--without-mingle"])


def flower(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5555,
    address: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Run Flower with basic auth (TAGGER_FLOWER_USER / TAGGER_FLOWER_PASSWORD)."""
    from shared.config import get_settings

    s = get_settings()
    password = s.flower_password
    if not password:
        password = secrets.token_urlsafe(12)
        console.print(f"[yellow]TAGGER_FLOWER_PASSWORD is not set; this run's password for "
                      f"'{s.flower_user}':[/] {password}")
    # Through the environment, not argv: argv is visible to every user in `ps`.
    os.environ["FLOWER_BASIC_AUTH"] = f"{s.flower_user}:{password}"
    _metrics_behind_auth()
    from workers.app import create_app

    create_app(s).start(["flower", f"--port={port}", f"--address={address}"])


def _metrics_behind_auth() -> None:
    """Flower 2 serves ``/metrics`` to anyone, even with basic auth on (its handler lacks the
    ``authenticated`` decorator its pages have): swap in the same handler behind the same check."""
    import tornado.web
    from flower import urls
    from flower.views.monitor import Metrics

    class AuthenticatedMetrics(Metrics):
        @tornado.web.authenticated
        async def get(self) -> None:
            await super().get()

    def swapped(h: Any) -> Any:  # a (pattern, handler[, kwargs]) tuple or a tornado URLSpec
        if isinstance(h, tuple) and len(h) > 1 and h[1] is Metrics:
            return (h[0], AuthenticatedMetrics, *h[2:])
        if getattr(h, "handler_class", None) is Metrics:
            return tornado.web.url(h.regex.pattern, AuthenticatedMetrics, h.kwargs, h.name)
        return h

    urls.handlers[:] = [swapped(h) for h in urls.handlers]


def backfill(
    older_than: Annotated[str | None, typer.Option(help="Only products tagged by versions created "
                                                   "before this one (and by it).")] = None,
    rate: Annotated[float, typer.Option(help="Events per second at most.")] = 50.0,
) -> None:
    """Re-tag products whose model tags came from an older model, through the tagging queue."""
    from rich.progress import Progress

    from shared.config import get_settings
    from shared.db.session import session_scope
    from shared.errors import TaggerError
    from shared.publish import Publisher
    from shared.registry import live_version
    from workers.backfill import run_backfill

    if not (math.isfinite(rate) and rate > 0):  # click parses "inf" and "nan" as floats too
        raise _fail(f"--rate must be a positive number of events per second, not {rate}")
    s = get_settings()
    try:
        with session_scope(s.database_url) as session:
            row = live_version(session)
            live = row.version if row else None
        if live is None:
            raise _fail("no live model version in the registry (tagger models list)")
        with Publisher.from_settings(s) as pub, Progress(console=console) as progress:
            bar = progress.add_task(f"re-tagging with {live}", total=None)
            sent = run_backfill(s, pub.publish, live, older_than, rate,
                                progress=lambda n: progress.advance(bar, n))
    except (TaggerError, ValueError) as exc:
        raise _fail(exc) from None
    console.print(f"{sent} re-tag events published for model {live}")


def retrain(
    reason: Annotated[str, typer.Option(help="Recorded with the result.")] = "manual",
) -> None:
    """Retrain now from the human labels, in this process: gate, register, maybe promote."""
    import json

    from shared.config import get_settings
    from shared.errors import TaggerError
    from workers.retraining import run_retrain

    try:
        result = run_retrain(get_settings(), reason=reason)
    except TaggerError as exc:
        raise _fail(exc) from None
    print(json.dumps(result, indent=2))
    if result["status"] == "skipped":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the pipeline's commands to the root ``tagger`` command."""
    for fn in (worker, flower, backfill, retrain):
        app.command()(fn)
