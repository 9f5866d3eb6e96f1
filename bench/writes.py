"""The batch write's cost per event: executemany (one parameter set per row) vs set-based (one array
per column, ``INSERT ... SELECT FROM unnest``), in one run, on one Postgres database.

Why: issue 13 measured the batch write as the plumbing's bottleneck (~9 ms of thread time per event,
an executemany of ~21 tag rows per product). Both paths run the same ``apply_batch`` on the same
synthetic results (``--tags`` model tags per product, ``--batch`` events per transaction, fresh
products each round so every write inserts), alternating round by round so drift on a shared
machine hits both alike. Reported: wall ms and CPU (thread) ms per event, medians over rounds, and
the ratio. The database ``tagger_bench_writes_<pid>`` is created, migrated and dropped.

Not a test: numbers for docs/BENCHMARKS.md. Last line: ``write_ms_per_event=W cpu_ms_per_event=C
executemany_ms_per_event=E speedup=S``.

    .venv/bin/python -m bench.writes --batch 32 --rounds 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from shared.db import sql
from shared.db.migrate import upgrade
from shared.db.session import session_scope
from shared.db.tags import TaggingResult, apply_batch

ADMIN_URL = os.environ.get("TAGGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
AXES = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")


def results(batch: int, tags_per_product: int) -> list[TaggingResult]:
    now = datetime.now(UTC)
    out = []
    for _ in range(batch):
        tags = []
        for i in range(tags_per_product):
            axis = AXES[i % len(AXES)]
            evidence = {"shares": {"title": 0.6, "photo": 0.4}, "title_alone": f"v{i}", "photo_alone": None}
            tags.append((axis, f"value-{i}", 0.5 + i / 100, "auto" if i % 3 == 0 else "review",
                         None, evidence if i % 3 == 0 else None))
        pid = f"p-{uuid.uuid4().hex[:12]}"
        out.append(TaggingResult(
            event_id=f"e-{uuid.uuid4().hex[:12]}", product_id=pid, seller_id="s1",
            title="Nike Men Navy Blue Running Shoes", description="Lightweight mesh upper",
            image_uri=f"s3://images/{pid}.jpg", locale="en-GB", occurred_at=now, content_hash="h",
            model_version="bench", tags=tags, novelty=0.2))
    return out


def timed(url: str, batch: list[TaggingResult], set_based: bool) -> tuple[float, float]:
    sql.SET_BASED = set_based
    t0, c0 = time.perf_counter(), time.thread_time()
    with session_scope(url) as session:
        apply_batch(session, batch)
    return time.perf_counter() - t0, time.thread_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32, help="events per transaction")
    ap.add_argument("--tags", type=int, default=21, help="model tag rows per product (top-3 x 7 axes)")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"tagger_bench_writes_{os.getpid()}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        for mode in (True, False):  # warm both paths (connections, statement caches)
            timed(url, results(args.batch, args.tags), mode)
        wall: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}
        for i in range(args.rounds):
            for mode in ((True, False) if i % 2 == 0 else (False, True)):
                w, c = timed(url, results(args.batch, args.tags), mode)
                wall[mode].append(w * 1000 / args.batch)
                cpu[mode].append(c * 1000 / args.batch)
    finally:
        sql.SET_BASED = True
        from shared.db.session import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in wall}
    print(f"batch={args.batch} tags_per_product={args.tags} rounds={args.rounds}")
    for mode, label in ((False, "executemany"), (True, "set-based")):
        print(f"  {label:12s} wall {med[mode][0]:.3f} ms/event  cpu {med[mode][1]:.3f} ms/event")
    print(f"write_ms_per_event={med[True][0]:.3f} cpu_ms_per_event={med[True][1]:.3f} "
          f"executemany_ms_per_event={med[False][0]:.3f} speedup={med[False][0] / med[True][0]:.2f}")


if __name__ == "__main__":
    main()
