"""``tagger models list | show V | promote V | rollback``: the model registry (shared.registry)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from cli.output import console, out
from cli.output import fail as _fail
from shared.errors import TaggerError

models_app = typer.Typer(
    no_args_is_help=True,
    help="Model registry: list versions, show one, promote a version, roll back "
    "(database from TAGGER_DATABASE_URL, artifacts in TAGGER_OBJECT_STORE_URL).",
)



def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "—"


def headline(metrics: dict[str, Any]) -> tuple[float | None, float | None]:
    """Mean accuracy (micro-F1 for multi-label) and mean macro-F1 over the axes of the fused model."""
    modalities = metrics.get("modalities") if isinstance(metrics, dict) else None
    if not isinstance(modalities, dict) or not modalities:
        return None, None
    axes = modalities.get("both") or list(modalities.values())[-1]
    if not isinstance(axes, dict):
        return None, None

    def mean(values: list[Any]) -> float | None:
        nums = [float(v) for v in values if isinstance(v, int | float)]
        return sum(nums) / len(nums) if nums else None

    ms = [m for m in axes.values() if isinstance(m, dict)]
    return mean([m.get("accuracy", m.get("micro_f1")) for m in ms]), mean([m.get("macro_f1") for m in ms])


def _row_json(row: Any) -> dict[str, Any]:
    return {
        "version": row.version, "status": row.status, "uri": row.uri, "parent_version": row.parent_version,
        "label_watermark": row.label_watermark.isoformat() if row.label_watermark else None,
        "reason": row.reason, "created_at": row.created_at.isoformat() if row.created_at else None,
        "promoted_at": row.promoted_at.isoformat() if row.promoted_at else None, "metrics": row.metrics,
    }


def _store() -> Any:
    from shared.config import get_settings
    from shared.storage import open_store

    settings = get_settings()
    return open_store(settings.object_store_url, settings)


@models_app.command("list")
def list_() -> None:
    """Every registered version, newest first, with its status and headline metrics."""
    from shared.db.session import session_scope
    from shared.registry import list_versions

    try:
        with session_scope() as session:
            rows = list_versions(session)
    except (TaggerError, SQLAlchemyError) as exc:
        raise _fail(exc) from None
    table = Table(title="model versions")
    for col in ("version", "status", "created", "promoted", "parent"):
        table.add_column(col)
    table.add_column("acc", justify="right")
    table.add_column("macro-F1", justify="right")
    styles = {"live": "bold green", "rejected": "red", "retired": "dim"}
    for row in rows:
        acc, f1 = headline(row.metrics or {})
        style = styles.get(row.status, "")
        status = f"[{style}]{row.status}[/]" if style else row.status
        table.add_row(row.version, status, _when(row.created_at), _when(row.promoted_at),
                      row.parent_version or "—",
                      "—" if acc is None else f"{acc:.3f}", "—" if f1 is None else f"{f1:.3f}")
    out.print(table)
    if not rows:
        console.print("no model versions registered yet")


@models_app.command()
def show(version: Annotated[str, typer.Argument(help="Version to show.")]) -> None:
    """One version as JSON: its row, and the metrics and training fingerprint of its manifest."""
    from shared.db.session import session_scope
    from shared.ml.manifest import MANIFEST, parse_manifest
    from shared.registry import artifact_prefix, get_version

    try:
        with session_scope() as session:
            row = get_version(session, version)
            if row is None:
                raise _fail(ValueError(f"unknown model version {version}"))
            doc = _row_json(row)
        store, key = _store(), f"{artifact_prefix(version)}/{MANIFEST}"
        manifest = parse_manifest(store.get(key), store.uri(key))
        doc["manifest"] = {"created_at": manifest.created_at, "metrics": manifest.metrics,
                           "training": {k: manifest.training.get(k) for k in ("dataset", "fingerprint", "n")}}
    except (TaggerError, SQLAlchemyError, ValueError) as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(doc, indent=2))  # plain JSON: for scripts and jq, never wrapped or coloured


def _change_live(change: Callable[[Any, Any], Any]) -> tuple[str | None, Any]:
    """Run ``change(session, store)`` in one transaction; returns the version live before it and
    what ``change`` returned. Errors end the command with their message."""
    from shared.db.session import session_scope
    from shared.registry import live_version

    try:
        store = _store()
        with session_scope() as session:
            before = live_version(session)
            previous = before.version if before else None
            return previous, change(session, store)
    except (TaggerError, SQLAlchemyError) as exc:
        raise _fail(exc) from None


@models_app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Version to make live.")],
    reason: Annotated[str, typer.Option(help="Why; recorded on the row.")] = "promoted by an operator",
) -> None:
    """Verify a version's artifact from the store, then make it live (the live one is retired)."""
    from shared.registry import promote as do_promote

    previous, _ = _change_live(lambda session, store: do_promote(session, store, version, reason))
    out.print(f"{version} is live (was: {previous or 'none'})")


@models_app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why; recorded on both rows.")] = "rolled back by an operator",
) -> None:
    """Retire the live version and restore the one live before it (its artifact verified first)."""
    from shared.registry import rollback as do_rollback

    previous, restored = _change_live(lambda session, store: do_rollback(session, store, reason).version)
    out.print(f"{restored} is live again ({previous} retired)")


def register(app: typer.Typer) -> None:
    """Add the ``models`` group to the root ``tagger`` command."""
    app.add_typer(models_app, name="models")
