"""``tagger demo``: the sample products through the real pipeline, end to end.

With the embedded defaults (no Redis, no Postgres) it uses SQLite, a local directory as the
object store and an in-process broker with the worker started right here — the same Celery task,
the same batching, the same transaction as production. Pointed at Redis and Postgres through
``TAGGER_`` settings, the same command uses them.
"""

from __future__ import annotations

import os
import tarfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from shared.config import SAMPLE_MANIFEST, get_settings

console = Console()


def _local_object_store(root: Path) -> dict[str, Path]:
    """Unpack the sample photos into a local directory: the demo's object store."""
    from shared.ml.dataset import load_manifest

    m = load_manifest(SAMPLE_MANIFEST)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(m.archive_path) as tar:
        for member in tar:
            if member.isfile():
                dest = root / Path(member.name).name
                if not dest.exists():
                    dest.write_bytes(tar.extractfile(member).read())
    return {p.name: p.resolve() for p in root.iterdir()}


def run_demo(n: int = 200, show: int = 12, timeout_s: float = 600.0) -> float:
    """Publish ``n`` sample products, wait until every event is finished, print the tags.
    Returns events per second from first publish to last commit."""
    os.environ.setdefault("TAGGER_ALLOW_FILE_URIS", "true")
    get_settings.cache_clear()
    s = get_settings()
    from shared.db.migrate import upgrade
    from shared.db.models import ProductTag, TaggingEvent
    from shared.db.session import session_scope
    from shared.events import ProductUploaded
    from shared.ml.dataset import load_manifest, load_records

    upgrade(s.database_url)
    store = _local_object_store(Path("var/demo/objects"))
    records = load_records(load_manifest(SAMPLE_MANIFEST))[:n]
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    events = [
        ProductUploaded(
            event_id=f"demo-{run}-{r.id}", product_id=f"sample-{r.id}", seller_id="demo-seller",
            title=r.text, image_uri=store[Path(r.image_ref).name].as_uri(), locale="en-IN",
            occurred_at=now,
        )
        for r in records
    ]
    from workers.app import app
    from workers.tagging import load_runtime

    console.print(f"[bold]database[/] {sa.make_url(s.database_url).render_as_string()}  "
                  f"[bold]broker[/] {s.broker_url.split('@')[-1]}  [bold]batch[/] {s.batch_size}")
    rt = load_runtime(s)
    console.print(f"[bold]model[/] {rt.tagger.version} on {rt.tagger.device}")
    ids = [e.event_id for e in events]
    from celery.contrib.testing.worker import start_worker

    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False,
                      loglevel="WARNING", queues=[s.tagging_queue], shutdown_timeout=30):
        t0 = time.perf_counter()
        for e in events:
            app.send_task("tagger.tag_product", kwargs={"event": e.model_dump(mode="json")},
                          queue=s.tagging_queue)
        done = 0
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task("tagging", total=len(ids))
            while done < len(ids) and time.perf_counter() - t0 < timeout_s:
                with session_scope(s.database_url) as session:
                    done = session.scalar(
                        sa.select(sa.func.count()).select_from(TaggingEvent).where(
                            TaggingEvent.event_id.in_(ids),
                            TaggingEvent.status.in_(["tagged", "failed", "dead"]))) or 0
                progress.update(bar, completed=done)
                time.sleep(0.1)
        elapsed = time.perf_counter() - t0
    rate = done / elapsed if elapsed else 0.0
    with session_scope(s.database_url) as session:
        rows = session.execute(
            sa.select(ProductTag.product_id, ProductTag.axis, ProductTag.value, ProductTag.score,
                      ProductTag.status)
            .where(ProductTag.product_id.in_([e.product_id for e in events[:show]]))
            .order_by(ProductTag.product_id, ProductTag.axis, ProductTag.score.desc())
        ).all()
        # Per (product, axis): applied when the model applied a value there, else left for review
        # (the review rows beside an applied value are only its runners-up).
        is_auto = sa.func.max(sa.case((ProductTag.status == "auto", 1), else_=0)).label("applied")
        pair = (sa.select(is_auto).where(ProductTag.product_id.in_([e.product_id for e in events]))
                .group_by(ProductTag.product_id, ProductTag.axis).subquery())
        applied = dict(session.execute(
            sa.select(pair.c.applied, sa.func.count()).group_by(pair.c.applied)).all())
    top: dict[str, dict[str, tuple[str, float, str]]] = {}
    for pid, axis, value, score, status in rows:
        top.setdefault(pid, {}).setdefault(axis, (value, score, status))
    table = Table(title=f"tags written by model {rt.tagger.version} (first {show} of {len(events)})")
    table.add_column("product", no_wrap=True)
    table.add_column("title", max_width=24, no_wrap=True, overflow="ellipsis")
    axes = ["articleType", "baseColour", "gender", "usage"]
    for a in axes:
        table.add_column(a)
    titles = {e.product_id: e.title for e in events}
    for pid, by_axis in top.items():
        cells = []
        for a in axes:
            v = by_axis.get(a)
            colour = "green" if v and v[2] == "auto" else "yellow"
            cells.append(f"[{colour}]{v[0]} {v[1]:.2f}[/]" if v else "—")
        table.add_row(pid, titles[pid], *cells)
    console.print(table)
    console.print(f"[green]auto[/] = applied, [yellow]review[/] = for a person; (product, axis) pairs: "
                  f"{applied.get(1, 0)} applied, {applied.get(0, 0)} for review")
    console.print(f"[bold]{done}/{len(ids)} events tagged in {elapsed:.1f}s: {rate:.1f} events/s[/]")
    if done < len(ids):
        raise SystemExit(f"only {done} of {len(ids)} events finished within {timeout_s:.0f}s")
    return rate
