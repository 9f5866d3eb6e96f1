"""What every ``tagger`` sub-command shares: where output and errors go, and how errors end a command."""

from __future__ import annotations

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
