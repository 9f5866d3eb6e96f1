"""What every ``tagger`` sub-command shares: where errors go and how they end the command."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


def fail(exc: Exception) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the exit to raise: code 2, unusable input.

    The message is escaped: user input in it (a file name, a field value) is not rich markup."""
    console.print(f"[bold red]error:[/] {escape(str(exc))}")
    return typer.Exit(code=2)
