"""``tagger api openapi``: write the HTTP API's OpenAPI document, or check that the written one is current."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli.output import console

SPEC_PATH = Path("docs/openapi.json")
REGENERATE = "tagger api openapi"  # the command that rewrites docs/openapi.json

api_app = typer.Typer(no_args_is_help=True, help="The HTTP API: its OpenAPI document.")


@api_app.command("openapi")
def write_openapi(
    out: Annotated[Path, typer.Option(help="Where to write the document.")] = SPEC_PATH,
    check: Annotated[bool, typer.Option(
        "--check", help="Write nothing; exit 1 if OUT differs from what the app generates.")] = False,
) -> None:
    """Write the API's OpenAPI document (deterministic JSON), or check that the written one is current."""
    from api.app import openapi_document
    from api.openapi import render

    text, shown = render(openapi_document()), escape(str(out))
    if check:
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != text:
            console.print(f"{shown} is {'missing' if current is None else 'out of date'}; "
                          f"run '{REGENERATE} --out {shown}'", soft_wrap=True)
            raise typer.Exit(code=1)
        console.print(f"{shown} is up to date", soft_wrap=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote {shown} ({len(text)} bytes)", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``api`` group (``tagger api openapi``) to the root ``tagger`` command."""
    app.add_typer(api_app, name="api")
