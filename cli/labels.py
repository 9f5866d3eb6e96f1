"""``tagger labels import MANIFEST``: load a labelled catalogue as human labels, with a summary.

Exit codes: 0 every row imported; 1 some rows refused (the others are imported and committed);
2 unusable input or database (nothing was written; the message says why).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from cli.output import fail, out
from shared.errors import TaggerError

if TYPE_CHECKING:
    from shared.labels.imports import ImportSummary

SHOWN_REFUSALS = 20
DEFAULT_IMAGE_DIR = Path("var/objects/label-images")

labels_app = typer.Typer(
    no_args_is_help=True,
    help="Human labels: import a labelled catalogue (database from TAGGER_DATABASE_URL).",
)


def _summary_table(summary: ImportSummary) -> Table:
    table = Table(title=f"{summary.rows} rows: {summary.imported} imported, {len(summary.refused)} refused")
    table.add_column("")
    for name in ("added", "updated", "unchanged", "superseded"):
        table.add_column(name, justify="right")
    table.add_row("products", str(summary.products_added), str(summary.products_updated),
                  str(summary.products_unchanged), "")
    table.add_row("labels", str(summary.labels_added), "", str(summary.labels_unchanged),
                  str(summary.labels_superseded))
    table.add_row("images", str(summary.images_stored), "", "", "")
    return table


def _refusals_table(summary: ImportSummary) -> Table:
    shown = summary.refused[:SHOWN_REFUSALS]
    more = len(summary.refused) - len(shown)
    table = Table(title="refused rows" + (f" (first {len(shown)}; {more} more)" if more else ""))
    table.add_column("row id", overflow="fold")
    table.add_column("reason", overflow="fold")
    for refusal in shown:
        table.add_row(escape(refusal.row_id), escape(refusal.reason))
    return table


def _database_message(exc: SQLAlchemyError) -> str:
    """The driver's first line (not the statement and its thousands of parameters), with a hint."""
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    if "no such table" in message or ("relation" in message and "does not exist" in message):
        message += " (is the database migrated? run `tagger db upgrade`)"
    return message


@labels_app.command("import")
def import_(
    manifest: Annotated[Path, typer.Argument(
        metavar="MANIFEST", show_default=False,
        help="Dataset manifest (the same YAML as `tagger train`); every label becomes a confirmed one.")],
    image_dir: Annotated[Path, typer.Option(
        help="Folder the images are stored in, named by content hash.")] = DEFAULT_IMAGE_DIR,
) -> None:
    """Import a labelled catalogue: products, their images and confirmed human labels; safe to repeat."""
    from shared.config import get_settings
    from shared.db.session import session_scope
    from shared.labels.imports import import_labels

    settings = get_settings()
    try:
        with tqdm(desc="importing", unit="row", disable=None) as bar, session_scope() as session:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            summary = import_labels(session, manifest, image_dir=image_dir,
                                    max_image_bytes=settings.max_image_bytes, progress=progress)
    except (TaggerError, OSError) as exc:
        raise fail(exc) from None
    except SQLAlchemyError as exc:
        raise fail(_database_message(exc)) from None
    out.print(_summary_table(summary))
    if summary.refused:
        out.print(_refusals_table(summary))
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``labels`` group to the root ``tagger`` command."""
    app.add_typer(labels_app, name="labels")
