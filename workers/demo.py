"""The demo's pipeline run: the sample products through the real Celery task, in this process.

With the embedded defaults (no Redis, no Postgres) it uses SQLite, a local directory as the
object store and an in-process broker with the worker started right here — the same Celery task,
the same batching, the same transaction as production. Pointed at Redis and Postgres through
``TAGGER_`` settings, the same run uses them. ``tagger demo`` (cli/demo.py) prints the result.
"""

from __future__ import annotations

import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from shared.config import SAMPLE_MANIFEST, Settings
from shared.events import ProductUploaded

DEMO_OBJECTS = Path("var/demo/objects")
SAMPLE_SIZE = 200


@dataclass
class DemoResult:
    """What a demo run did: how many events finished, how fast, and the tags it wrote."""

    model_version: str
    events: list[ProductUploaded]
    done: int
    elapsed_s: float
    # product id -> axis -> (value, score, status) of the top-scored tag, for the first products
    top: dict[str, dict[str, tuple[str, float, str]]] = field(default_factory=dict)
    applied_pairs: int = 0  # (product, axis) pairs where the model applied a value
    review_pairs: int = 0  # (product, axis) pairs left for a person

    @property
    def rate(self) -> float:
        """Events per second from first publish to last commit."""
        return self.done / self.elapsed_s if self.elapsed_s else 0.0


def demo_settings(settings: Settings) -> Settings:
    """The demo's photos are local files: allow file:// URIs unless the environment said otherwise."""
    if "allow_file_uris" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"allow_file_uris": True})


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


def sample_events(n: int) -> list[ProductUploaded]:
    """``n`` upload events for the sample products (new event ids each run), photos as file:// URIs."""
    from shared.ml.dataset import load_manifest, load_records

    store = _local_object_store(DEMO_OBJECTS)
    records = load_records(load_manifest(SAMPLE_MANIFEST))[:n]
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    return [
        ProductUploaded(
            event_id=f"demo-{run}-{r.id}", product_id=f"sample-{r.id}", seller_id="demo-seller",
            title=r.text, image_uri=store[Path(r.image_ref).name].as_uri(), locale="en-IN",
            occurred_at=now,
        )
        for r in records
    ]


def _finished(s: Settings, ids: list[str]) -> int:
    from shared.db.models import TaggingEvent
    from shared.db.session import session_scope

    with session_scope(s.database_url) as session:
        return session.scalar(
            sa.select(sa.func.count()).select_from(TaggingEvent).where(
                TaggingEvent.event_id.in_(ids), TaggingEvent.status.in_(["tagged", "failed", "dead"]))) or 0


def _summarise(s: Settings, result: DemoResult, show: int) -> None:
    from shared.db.models import ProductTag
    from shared.db.session import session_scope

    events = result.events
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
    for pid, axis, value, score, status in rows:
        result.top.setdefault(pid, {}).setdefault(axis, (value, score, status))
    result.applied_pairs, result.review_pairs = applied.get(1, 0), applied.get(0, 0)


def run_demo(
    settings: Settings, n: int = SAMPLE_SIZE, show: int = 12, timeout_s: float = 600.0,
    on_model: Callable[[str, str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Publish ``n`` sample products, wait until every event is finished, read back the tags.

    ``on_model(version, device)`` is called once the model is loaded, ``progress(done, total)`` while
    waiting."""
    from celery.contrib.testing.worker import start_worker

    from shared.db.migrate import upgrade
    from shared.tasks import TAG_PRODUCT
    from workers.app import create_app
    from workers.tagging import load_runtime

    s = demo_settings(settings)
    upgrade(s.database_url)
    events = sample_events(min(n, SAMPLE_SIZE))
    app = create_app(s)
    rt = load_runtime(s)
    if on_model is not None:
        on_model(rt.tagger.version, str(rt.tagger.device))
    ids = [e.event_id for e in events]
    queue = TAG_PRODUCT.queue_name(s)
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False,
                      loglevel="WARNING", queues=[queue], shutdown_timeout=30):
        t0 = time.perf_counter()
        for e in events:
            app.send_task(TAG_PRODUCT.name, kwargs={"event": e.model_dump(mode="json")}, queue=queue)
        done = 0
        while done < len(ids) and time.perf_counter() - t0 < timeout_s:
            done = _finished(s, ids)
            if progress is not None:
                progress(done, len(ids))
            time.sleep(0.1)
        elapsed = time.perf_counter() - t0
    result = DemoResult(model_version=rt.tagger.version, events=events, done=done, elapsed_s=elapsed)
    _summarise(s, result, show)
    return result
