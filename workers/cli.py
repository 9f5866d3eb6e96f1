"""The ``tagger`` command: one entry point for operators, grouped by domain."""

from __future__ import annotations

import typer

from api import openapi as api_commands
from shared import apikeys_commands, labels_commands, publish_commands, registry_commands
from shared.db import commands as db_commands
from shared.ml import commands as model_commands
from workers import commands as pipeline_commands

app = typer.Typer(
    name="tagger", no_args_is_help=True, add_completion=False,
    help="Tag e-commerce products from their title and photo.",
)
model_commands.register(app)
publish_commands.register(app)
db_commands.register(app)
labels_commands.register(app)
registry_commands.register(app)
apikeys_commands.register(app)
pipeline_commands.register(app)
api_commands.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
