"""Producer throughput: events/s through the Python ``Publisher`` (what ``tagger publish`` calls),
with and without the outbox, each variant against its own baseline in ONE run.

Why (issue 13, point 4): a GPU worker drains thousands of events per second; the producers must
not be what it waits on. Target: >= 5,000 events/s without the outbox on this machine.

One run starts its own private ``redis-server`` on a free loopback port (bench/ingest.py's runner)
and, for the outbox, its own Postgres database ``tagger_bench_publish_<pid>`` (migrated, dropped
at the end). It builds ``--n`` validated events per round (fresh event ids, the committed sample's
titles) and publishes them in calls of ``--chunk`` events (``tagger publish`` sends 200 per call),
``--rounds`` times per variant, the variants INTERLEAVED round by round so that a machine shared
with other work slows them alike:

  - ``send_task``: every message through Celery's ``send_task`` (the publisher before this change;
    still what it does when a host service connects Celery's publish signals);
  - ``direct``: the message built by Celery (``amqp.as_task_v2``) and published by kombu at once;
  - ``outbox:before``: send_task, each call first recording and committing its events in
    ``tagging_events`` with an executemany INSERT ... RETURNING and marking them enqueued with
    ``IN (...)`` lists afterwards (shared/outbox.py), i.e. ``shared.db.sql.SET_BASED = False``;
  - ``outbox:after``: direct, the record as one INSERT ... SELECT FROM json_to_recordset (one JSON
    document) and the mark as one ``= ANY(:keys)`` UPDATE.

It reports per variant the median events/s (publish calls only: building the events is not timed)
and the CPU time of this process per event (its own cost, whatever else runs: ``1e6 / cpu_us`` is
what one free core could send, Redis and Postgres aside), the ratios, the load average, and checks
that every event is on the queue (and recorded).
``--profile VARIANT`` prints a cProfile of one more round of that variant.

Not a test: numbers for docs/BENCHMARKS.md. The last line reads
``publish_events_per_s=D outbox_events_per_s=O direct_over_send_task=R``.

    .venv/bin/python -m bench.publish --n 4000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.databases import drop_database, recreate_database
from bench.ingest import DEFAULT_POSTGRES, RedisServer, sample_products

QUEUE = "tagging"
VARIANTS = ("send_task", "direct", "outbox:before", "outbox:after")


def make_events(templates: list[dict[str, Any]], n: int, tag: str) -> list[Any]:
    from shared.events import ProductUploaded

    now = datetime.now(UTC)
    out = []
    for i in range(n):
        t = templates[i % len(templates)]
        out.append(ProductUploaded.model_validate(
            {**t, "event_id": f"{tag}-{i}-{uuid.uuid4().hex[:12]}", "product_id": f"{t['product_id']}-{i}",
             "occurred_at": now}))
    return out


def publish_all(publisher: Any, events: list[Any], chunk: int, set_based: bool = True) -> tuple[float, float]:
    """Wall and CPU seconds to publish ``events`` in calls of ``chunk``."""
    from shared.db import sql

    sql.SET_BASED = set_based
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, len(events), chunk):
            publisher.publish(events[start:start + chunk])
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        sql.SET_BASED = True


def via_send_task(publisher: Any) -> None:
    """Force the send_task path on this publisher (as when publish signals are connected)."""
    publisher._signals_connected = lambda: True  # noqa: SLF001


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000, help="events per round and variant")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (each runs every variant once)")
    ap.add_argument("--chunk", type=int, default=200, help="events per publish() call (tagger publish: 200)")
    ap.add_argument("--postgres", default=DEFAULT_POSTGRES,
                    help="a Postgres server URL; this run creates and drops its own database on it")
    ap.add_argument("--no-outbox", action="store_true", help="skip the outbox variants (no Postgres)")
    ap.add_argument("--profile", choices=VARIANTS, default=None, help="cProfile one more round of this")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    args = ap.parse_args()

    import sqlalchemy as sa

    from shared.publish import Publisher

    variants = [v for v in VARIANTS if not (args.no_outbox and v.startswith("outbox"))]
    templates = sample_products()
    rates: dict[str, list[float]] = {v: [] for v in variants}
    cpu_us: dict[str, list[float]] = {v: [] for v in variants}
    sent = 0
    with tempfile.TemporaryDirectory(prefix="tagger-bench-publish-") as tmp:
        redis_server = RedisServer(Path(tmp), args.redis_server)
        db = None
        try:
            if not args.no_outbox:
                db = sa.make_url(args.postgres).set(database=f"tagger_bench_publish_{os.getpid()}") \
                    .render_as_string(hide_password=False)
                recreate_database(db)
            publishers: dict[str, Any] = {}
            for v in variants:
                pub = Publisher(redis_server.url, QUEUE, database_url=db if v.startswith("outbox") else None)
                if v in ("send_task", "outbox:before"):
                    via_send_task(pub)
                pub.check()
                pub.publish(make_events(templates, args.chunk, f"warm-{v}"))  # connections, declare
                sent += args.chunk
                publishers[v] = pub
            for r in range(args.rounds):
                order = variants if r % 2 == 0 else variants[::-1]
                for v in order:
                    events = make_events(templates, args.n, f"{v}-{r}")
                    secs, cpu = publish_all(publishers[v], events, args.chunk, v != "outbox:before")
                    sent += len(events)
                    rates[v].append(len(events) / secs)
                    cpu_us[v].append(cpu / len(events) * 1e6)
            if args.profile:
                profile(publishers[args.profile], make_events(templates, args.n, "profile"), args.chunk,
                        args.profile != "outbox:before")
                sent += args.n
            with redis_server.client() as client:
                queued = client.llen(QUEUE)
            recorded = None
            if db is not None:
                engine = sa.create_engine(db, poolclass=sa.pool.NullPool)
                with engine.connect() as conn:
                    recorded = conn.execute(sa.text(
                        "SELECT count(*), count(enqueued_at) FROM tagging_events")).one()
                engine.dispose()
            for pub in publishers.values():
                pub.close()
        finally:
            redis_server.stop()
            if db is not None:
                from shared.db.session import dispose_engines

                dispose_engines()
                drop_database(db)

    load = os.getloadavg()
    med = {v: statistics.median(rs) for v, rs in rates.items()}
    print(f"{args.rounds} rounds x {args.n} events per variant, calls of {args.chunk}, interleaved; "
          f"{os.cpu_count()} CPUs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    cpu = {v: statistics.median(cs) for v, cs in cpu_us.items()}
    print(f"{'variant':<18} {'median ev/s':>12} {'min':>9} {'max':>9} {'cpu_us/event':>13}")
    for v in variants:
        print(f"{v:<18} {med[v]:>12.0f} {min(rates[v]):>9.0f} {max(rates[v]):>9.0f} {cpu[v]:>13.0f}")
    ok = queued == sent
    print(f"queued {queued} of {sent} sent" + (f"; outbox rows {recorded[0]}, enqueued {recorded[1]}"
                                                  if recorded is not None else "") + ("" if ok else "  LOST"))
    ratio = med["direct"] / med["send_task"]
    outbox = med.get("outbox:after", float("nan"))
    extra = f" outbox_after_over_before={outbox / med['outbox:before']:.2f}" if "outbox:after" in med else ""
    print(f"publish_events_per_s={med['direct']:.0f} outbox_events_per_s={outbox:.0f} "
          f"direct_over_send_task={ratio:.2f}{extra} load1={load[0]:.2f}")
    if not ok:
        raise SystemExit(1)


def profile(publisher: Any, events: list[Any], chunk: int, set_based: bool, top: int = 30) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    call: Callable[[], tuple[float, float]] = lambda: publish_all(publisher, events, chunk, set_based)  # noqa: E731
    prof.runcall(call)
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


if __name__ == "__main__":
    main()
