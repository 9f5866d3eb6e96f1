"""``tagger db upgrade`` and ``tagger db current``: the schema migrations (shared.db.migrate)."""

from __future__ import annotations

from typing import Annotated

import typer
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from cli.output import fail as _fail
from cli.output import out
from shared.errors import TaggerError

db_app = typer.Typer(
    no_args_is_help=True,
    help="Database schema: apply migrations, show the revision (URL from TAGGER_DATABASE_URL).",
)



@db_app.command()
def upgrade(
    revision: Annotated[str, typer.Option(help="Revision to migrate to.")] = "head",
) -> None:
    """Apply migrations up to a revision (default: head); safe to repeat."""
    from shared.db import migrate

    try:
        migrate.upgrade(revision=revision)
        at = migrate.current()
    except (TaggerError, CommandError, SQLAlchemyError) as exc:
        raise _fail(exc) from exc
    out.print(f"database at {', '.join(at) or 'base'}")


@db_app.command()
def current() -> None:
    """Print the database's revision and whether it is the newest one; exit 1 when behind."""
    from shared.db import migrate

    try:
        at, newest = migrate.current(), migrate.head()
    except (TaggerError, CommandError, SQLAlchemyError) as exc:
        raise _fail(exc) from exc
    up_to_date = at == ((newest,) if newest else ())
    out.print(f"{', '.join(at) or 'base'} ({'head' if up_to_date else f'behind: head is {newest}'})")
    if not up_to_date:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``db`` group to the root ``tagger`` command."""
    app.add_typer(db_app, name="db")
