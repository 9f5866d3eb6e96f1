"""The ``tagger`` command: one entry point for operators, grouped by domain."""

from __future__ import annotations

import typer

from shared.ml import commands as model_commands

app = typer.Typer(
    name="tagger", no_args_is_help=True, add_completion=False,
    help="Tag e-commerce products from their title and photo.",
)
model_commands.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
