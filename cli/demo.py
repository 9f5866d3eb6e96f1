"""``tagger demo``: the sample products through the real pipeline (workers/demo.py), printed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import sqlalchemy as sa
import typer
from rich.progress import Progress
from rich.table import Table

from cli.output import out

if TYPE_CHECKING:  # the root command imports this module: keep its start-up light
    from workers.demo import DemoResult

AXES_SHOWN = ("articleType", "baseColour", "gender", "usage")


def _table(result: DemoResult, show: int) -> Table:
    table = Table(title=f"tags written by model {result.model_version} "
                        f"(first {show} of {len(result.events)})")
    table.add_column("product", no_wrap=True)
    table.add_column("title", max_width=24, no_wrap=True, overflow="ellipsis")
    for a in AXES_SHOWN:
        table.add_column(a)
    titles = {e.product_id: e.title for e in result.events}
    for pid, by_axis in result.top.items():
        cells = []
        for a in AXES_SHOWN:
            v = by_axis.get(a)
            colour = "green" if v and v[2] == "auto" else "yellow"
            cells.append(f"[{colour}]{v[0]} {v[1]:.2f}[/]" if v else "—")
        table.add_row(pid, titles[pid], *cells)
    return table


def demo(
    n: Annotated[int, typer.Option(help="How many sample products to publish (max 200).")] = 200,
    show: Annotated[int, typer.Option(help="Rows of the result table.")] = 12,
) -> None:
    """Tag the sample products through the real pipeline and print the tags and events/s."""
    from shared.config import get_settings
    from workers.demo import demo_settings, run_demo

    s = demo_settings(get_settings())
    out.print(f"[bold]database[/] {sa.make_url(s.database_url).render_as_string()}  "
              f"[bold]broker[/] {s.broker_url.split('@')[-1]}  [bold]batch[/] {s.batch_size}")
    with Progress(console=out, transient=True) as progress:
        bar = progress.add_task("tagging", total=None)
        result = run_demo(
            s, n=n, show=show,
            on_model=lambda version, device: progress.console.print(f"[bold]model[/] {version} on {device}"),
            progress=lambda done, total: progress.update(bar, completed=done, total=total))
    out.print(_table(result, show))
    out.print(f"[green]auto[/] = applied, [yellow]review[/] = for a person; (product, axis) pairs: "
              f"{result.applied_pairs} applied, {result.review_pairs} for review")
    out.print(f"[bold]{result.done}/{len(result.events)} events tagged in {result.elapsed_s:.1f}s: "
              f"{result.rate:.1f} events/s[/]")
    if result.done < len(result.events):
        raise SystemExit(f"only {result.done} of {len(result.events)} events finished in time")


def register(app: typer.Typer) -> None:
    """Add ``tagger demo`` to the root command."""
    app.command()(demo)
