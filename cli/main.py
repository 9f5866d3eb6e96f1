"""The ``tagger`` command: one entry point for operators, grouped by domain (one module per group)."""

from __future__ import annotations

import typer

from cli import api, audit, db, dead_letters, demo, keys, labels, model, models, pipeline, publish

app = typer.Typer(
    name="tagger", no_args_is_help=True, add_completion=False,
    help="Tag e-commerce products from their title and photo.",
)
for group in (model, publish, db, labels, models, keys, audit, dead_letters, pipeline, demo, api):
    group.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
