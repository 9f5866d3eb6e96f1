"""A root app shaped like ``tagger``, holding one command group: each group is tested on its own."""

from __future__ import annotations

from collections.abc import Callable

import typer


def root_with(register: Callable[[typer.Typer], None]) -> typer.Typer:
    """A typer group holding ``register``'s commands, invoked as ``tagger`` would: ``GROUP COMMAND ...``."""
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """Stand-in for the root ``tagger`` command."""

    register(root)
    return root
