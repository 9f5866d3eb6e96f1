"""What every ``tagger`` sub-command shares: where output and errors go, and how errors end a command."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)  # progress, notes and errors: never mixed into what a script reads
out = Console()  # results (tables, JSON, tokens) on stdout


def fail(exc: Exception | str) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the exit to raise: code 2, unusable input.

    The message is escaped: user input in it (a file name, a field value) is not rich markup."""
    console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code=2)


@contextlib.contextmanager
def show_warnings() -> Iterator[None]:
    """Our data warnings (shared.ml.dataset.DataWarning) as ``warning: <message>`` lines on stderr,
    each once, instead of Python's ``file:line: Category: message`` form; other warnings unchanged."""
    from shared.ml.dataset import DataWarning

    shown: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)  # dedup here, by message, not per location
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if not issubclass(category, DataWarning):
                original(message, category, filename, lineno, file, line)
            elif str(message) not in shown:
                shown.add(str(message))
                console.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)

        warnings.showwarning = show
        yield
