"""Operator commands for the pipeline: ``tagger worker``, ``tagger flower``, ``tagger demo``."""

from __future__ import annotations

import os
import secrets
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def worker(
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    pool: Annotated[str, typer.Option(help="threads or solo: CUDA does not survive a fork.")] = "threads",
) -> None:
    """Run a tagging worker: one process per GPU, model loaded once at start."""
    from shared.config import get_settings
    from workers.app import app

    s = get_settings()
    app.worker_main(["worker", "-Q", s.tagging_queue, "-P", pool, "-c", "1", f"--loglevel={loglevel}",
                     "-E", "--without-gossip", "--without-mingle"])


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
    from workers.app import app

    app.start(["flower", f"--port={port}", f"--address={address}"])


def demo(
    n: Annotated[int, typer.Option(help="How many sample products to publish (max 200).")] = 200,
    show: Annotated[int, typer.Option(help="Rows of the result table.")] = 12,
) -> None:
    """Tag the sample products through the real pipeline and print the tags and events/s."""
    from workers.demo import run_demo

    run_demo(n=min(n, 200), show=show)


def register(app: typer.Typer) -> None:
    for fn in (worker, flower, demo):
        app.command()(fn)
