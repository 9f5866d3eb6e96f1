"""``tagger audit list | refresh``: the live audit's per-value switches (shared/audit.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from cli.output import console
from cli.output import fail as _fail
from shared.errors import TaggerError

audit_app = typer.Typer(
    no_args_is_help=True,
    help="Live audit of auto tags: which values auto-apply, on what evidence (database from "
    "TAGGER_DATABASE_URL).",
)


@audit_app.command("list")
def list_(axis: Annotated[str | None, typer.Option(help="Only this axis.")] = None) -> None:
    """Every value with audit evidence, tab-separated: axis, value, enabled, n, hits, lower, upper."""
    from shared.audit import switches
    from shared.db.session import session_scope

    try:
        with session_scope() as session:
            rows = [(s.axis, s.value, s.enabled, s.n, s.hits, s.lower, s.upper)
                    for s in switches(session, axis)]
    except (TaggerError, SQLAlchemyError) as exc:
        raise _fail(exc) from None
    typer.echo("axis\tvalue\tenabled\tn\thits\tlower\tupper")
    for a, v, enabled, n, hits, lower, upper in rows:
        typer.echo(f"{a}\t{v}\t{'yes' if enabled else 'no'}\t{n}\t{hits}\t{lower:.4f}\t{upper:.4f}")


@audit_app.command()
def refresh() -> None:
    """Recompute every value's switch now (after changing TAGGER_TARGET_PRECISION or the audit window)."""
    from shared.audit import refresh_all
    from shared.config import get_settings
    from shared.db.session import session_scope

    s = get_settings()
    try:
        with session_scope() as session:
            verdicts = refresh_all(session, target=s.target_precision, window=s.audit_window)
    except (TaggerError, SQLAlchemyError) as exc:
        raise _fail(exc) from None
    off = [v for v in verdicts if not v.enabled]
    named = ", ".join(f"{v.axis}={v.value}" for v in off[:20])
    summary = f"{len(verdicts)} values recomputed; {len(off)} switched off"
    console.print(summary + (f": {named}" if off else ""), soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``audit`` group to the root ``tagger`` command."""
    app.add_typer(audit_app, name="audit")
