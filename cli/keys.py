"""``tagger keys create|revoke|list``: manage HTTP API keys (database from TAGGER_DATABASE_URL)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from cli.output import console, out
from cli.output import fail as _fail
from shared.apikeys import ROLES
from shared.errors import TaggerError

keys_app = typer.Typer(
    no_args_is_help=True,
    help="HTTP API keys: create (the token is shown once), revoke, list.",
)



@keys_app.command()
def create(
    name: Annotated[str, typer.Argument(help="Who or what uses the key, e.g. 'seller-service'.")],
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.")] = "producer",
) -> None:
    """Create a key and print its token once; only a hash is stored, so it cannot be shown again."""
    from shared.apikeys import create_key
    from shared.db.session import session_scope

    try:
        with session_scope() as session:
            key_id, token = create_key(session, name, role)
    except (TaggerError, SQLAlchemyError) as exc:
        raise _fail(exc) from exc
    console.print(f"created key {key_id} ({escape(role)}) for {escape(name)}; store this token now, "
                  "it is not shown again:")
    out.print(token, markup=False, highlight=False, soft_wrap=True)


@keys_app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key id (from 'tagger keys list').")]) -> None:
    """Revoke a key: requests that use it get 401 from now on; safe to repeat."""
    from shared.apikeys import revoke as revoke_key
    from shared.db.session import session_scope

    try:
        with session_scope() as session:
            key = revoke_key(session, key_id)
            revoked_at = key.revoked_at
    except (TaggerError, SQLAlchemyError) as exc:
        raise _fail(exc) from exc
    out.print(f"revoked {key_id} at {revoked_at:%Y-%m-%d %H:%M:%S} UTC" if revoked_at else key_id)


@keys_app.command("list")
def list_command(
    active: Annotated[bool, typer.Option("--active", help="Hide revoked keys.")] = False,
) -> None:
    """List keys as tab-separated lines: id, name, role, created, revoked (secrets are never stored)."""
    from shared.apikeys import list_keys
    from shared.db.session import session_scope

    try:
        with session_scope() as session:
            keys = list_keys(session, include_revoked=not active)
    except (TaggerError, SQLAlchemyError) as exc:
        raise _fail(exc) from exc
    # Tab-separated lines, not a boxed table: ids stay whole at any terminal width, and it pipes to cut/awk.
    typer.echo("id\tname\trole\tcreated_utc\trevoked_utc")
    for key in keys:
        revoked = f"{key.revoked_at:%Y-%m-%dT%H:%M:%S}" if key.revoked_at else "-"
        typer.echo(f"{key.id}\t{key.name}\t{key.role}\t{key.created_at:%Y-%m-%dT%H:%M:%S}\t{revoked}")


def register(app: typer.Typer) -> None:
    """Add the ``keys`` group to the root ``tagger`` command."""
    app.add_typer(keys_app, name="keys")
