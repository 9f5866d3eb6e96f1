"""Chaos (issue 11): a steady stream of events through the outbox while the worker is SIGKILLed at
random moments and restarted, its persistent (AOF) Redis is killed and restarted once, and its
PostgreSQL (a private cluster this test owns, tests/pg_cluster.py) is really stopped for 30 s and
started again; plus poison messages sent on purpose. It ends with every good event tagged exactly
once, no duplicate tag rows, no dead letters but the poison's, and a short report (printed, and
written to ``$TAGGER_CHAOS_REPORT`` when set). ``TAGGER_CHAOS_SEED`` replays a run's random moments.

Select it with ``-m chaos``; it runs in the default ``pytest`` run too (about three minutes).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from shared.config import SAMPLE_MANIFEST, Settings
from shared.db.migrate import upgrade
from shared.db.session import dispose_engines
from shared.publish import BrokerUnavailable, OutboxUnavailable, Publisher
from shared.tasks import TAG_PRODUCT
from tests.pg_cluster import PgCluster
from tests.workers.db import Db
from tests.workers.procs import RedisServer, Worker, wait_for
from workers.sweeper import sweep

pytestmark = pytest.mark.chaos

GOOD_EVENTS = 520  # the steady stream, through the outbox
STREAM_S = 75.0  # spread over about this long (longer: the database outage holds the producer)
BURST = 160  # published just before Postgres stops: a backlog (seconds of work) held through the outage
OUTAGE_S = 32.0
KILLS = 3
VISIBILITY_S = 8  # a killed worker's unacked messages come back after this
SWEEP_EVERY_S = 2.0
SWEEP_AFTER_S = 5.0  # recorded but never queued (the broker was down)
LOST_AFTER_S = 30.0  # queued but still 'received' this long: the broker lost it, re-send
DRAIN_TIMEOUT_S = 150.0


@dataclass
class Chaos:
    """What the run did, for the report and the assertions."""

    seed: int
    good: list[dict[str, Any]] = field(default_factory=list)  # every event the producer got recorded
    poison: dict[str, str] = field(default_factory=dict)  # marker -> what is wrong with it
    kills: list[float] = field(default_factory=list)  # seconds since the start
    worker_restarts: int = 0
    redis_restarts: int = 0
    outage: tuple[float, float] | None = None
    producer_db_retries: int = 0  # publishes refused by the outbox (database down), retried
    left_to_sweeper: int = 0  # events recorded while the broker was down: the sweeper sends them
    swept: int = 0
    sweep_errors: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    stream_done: float | None = None
    db_back_at: datetime | None = None
    before_outage: int = 0  # chaos.good[:before_outage] were recorded before the database came back
    drained: float | None = None

    def now(self) -> float:
        return round(time.monotonic() - self.started, 1)


def titles() -> list[str]:
    from shared.ml.dataset import load_manifest, load_records

    return [r.text for r in load_records(load_manifest(SAMPLE_MANIFEST)) if r.text]


def good_event(title: str) -> dict[str, Any]:
    return {"event_id": f"chaos-{uuid.uuid4().hex[:12]}", "product_id": f"cp-{uuid.uuid4().hex[:10]}",
            "seller_id": "seller-chaos", "title": title, "occurred_at": datetime.now(UTC).isoformat()}


# Messages that pass no door (sent raw, as a buggy or hostile producer would) and that the worker must
# dead-letter alone, whatever else is going on. Each carries its marker in event_id or payload.
def poison_messages(first: int, n: int) -> list[tuple[str, str, dict[str, Any]]]:
    base = good_event("Poison Shirt")
    out = []
    for i in range(first, first + n):
        kind = i % 4
        marker = f"poison-{i}-{uuid.uuid4().hex[:6]}"
        if kind == 0:
            ev = {**base, "event_id": marker}
            del ev["title"]
            out.append((marker, "missing title", {"event": ev}))
        elif kind == 1:
            out.append((marker, "NUL in title", {"event": {**base, "event_id": marker, "title": "a\x00b"}}))
        elif kind == 2:
            out.append((marker, "bad attempt", {"event": {**base, "event_id": marker}, "attempt": "x"}))
        else:
            out.append((marker, "event not an object", {"event": f"{marker} is not an event"}))
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    reason = PgCluster.skip_reason()
    if reason:
        pytest.skip(f"chaos suite needs a private PostgreSQL cluster: {reason}")
    pg = PgCluster()
    yield pg
    dispose_engines()
    pg.destroy()


def report_text(chaos: Chaos, db: Db, redis: RedisServer) -> tuple[str, dict[str, Any]]:
    ids = [e["event_id"] for e in chaos.good]
    got = db.events(ids)
    statuses = Counter(got.get(i, {}).get("status", "missing") for i in ids)
    letters = db.dead_letters()
    by_reason = Counter((d["reason"] or "")[:80] for d in letters)
    poison_letters = [d for d in letters if any(m in (d["event_id"] or "") or m in (d["payload"] or "")
                                                 for m in chaos.poison)]
    recovery = None
    if chaos.db_back_at and chaos.before_outage:
        held = [got.get(e["event_id"], {}).get("finished_at") for e in chaos.good[:chaos.before_outage]]
        if all(held):
            recovery = round(max(0.0, (max(held) - chaos.db_back_at).total_seconds()), 1)
    data = {
        "seed": chaos.seed,
        "events_sent": len(chaos.good), "poison_sent": len(chaos.poison),
        "worker_kills": len(chaos.kills), "kill_times_s": chaos.kills,
        "worker_restarts": chaos.worker_restarts, "redis_restarts": chaos.redis_restarts,
        "postgres_outage_s": round(chaos.outage[1] - chaos.outage[0], 1) if chaos.outage else 0,
        "outage_at_s": chaos.outage[0] if chaos.outage else None,
        "producer_retries_db_down": chaos.producer_db_retries,
        "recorded_while_broker_down": chaos.left_to_sweeper,
        "swept": chaos.swept, "sweep_errors": dict(chaos.sweep_errors),
        "stream_s": round(chaos.stream_done - chaos.started, 1) if chaos.stream_done else None,
        "backlog_done_after_db_back_s": recovery,
        "drain_s": (round(chaos.drained - chaos.stream_done, 1)
                    if chaos.drained and chaos.stream_done else None),
        "statuses": dict(statuses),
        "dead_letters": len(letters), "dead_letters_poison": len(poison_letters),
        "dead_letters_by_reason": dict(by_reason.most_common(8)),
        "redis_backlog": redis.backlog() if redis.proc and redis.proc.poll() is None else None,
    }
    lines = [
        f"chaos report (seed {chaos.seed})",
        f"  events sent: {data['events_sent']} good through the outbox, {data['poison_sent']} poison (raw)",
        f"  worker SIGKILLs: {data['worker_kills']} at {chaos.kills} s, restarts: {data['worker_restarts']}",
        f"  redis restarts: {data['redis_restarts']} (kill -9, AOF fsync always)",
        f"  postgres outage: {data['postgres_outage_s']} s (stopped at {data['outage_at_s']} s, "
        "pg_ctl -m fast)",
        f"  producer: {data['producer_retries_db_down']} publishes retried while the database was down, "
        f"{data['recorded_while_broker_down']} events recorded while the broker was down",
        f"  sweeper: {data['swept']} events re-sent, errors {data['sweep_errors']}",
        f"  stream: {data['stream_s']} s; time to drain after the last event: {data['drain_s']} s; "
        f"events recorded before the database came back all done {recovery} s after it",
        f"  good events by status: {data['statuses']}",
        f"  dead letters: {data['dead_letters']} ({data['dead_letters_poison']} of them poison); by reason: "
        f"{data['dead_letters_by_reason']}",
    ]
    return "\n".join(lines), data


def test_chaos_every_good_event_tagged_exactly_once(
    cluster: PgCluster, make_redis: Callable[..., RedisServer], worker_env: Callable[..., dict[str, str]],
    start_worker: Callable[..., Worker], tag_count: int,
) -> None:
    seed = int(os.environ.get("TAGGER_CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    chaos = Chaos(seed)
    url = cluster.create_database("tagger")
    upgrade(url)
    db = Db(url)
    redis = make_redis(persistent=True)
    # Probe a lost database every 2 s at most (default: doubling to 30 s, so a 32 s outage would keep
    # the worker waiting about 61 s: 0.5 + 1 + 2 + 4 + 8 + 16 + 30).
    env = worker_env(redis, url, visibility_timeout_s=VISIBILITY_S, max_attempts=3, outage_backoff_max_s=2)
    settings = Settings(database_url=url, broker_url=redis.url, visibility_timeout_s=VISIBILITY_S,
                        sweep_after_s=SWEEP_AFTER_S)
    worker = start_worker("chaos", env)
    chaos.worker_restarts = 0
    raw = Celery("chaos-poison", broker=redis.url, set_as_current=False)
    raw.conf.update(task_serializer="json", broker_connection_retry_on_startup=False,
                    broker_transport_options={"socket_timeout": 5})
    stop = threading.Event()
    pool = titles()
    errors: list[BaseException] = []

    def send_poison(n: int) -> list[str]:
        sent = []
        for marker, what, kwargs in poison_messages(len(chaos.poison), n):
            raw.send_task(TAG_PRODUCT.name, kwargs=kwargs, queue="tagging")
            chaos.poison[marker] = what
            sent.append(marker)
        return sent

    def wait_dead_lettered(markers: list[str], timeout: float) -> None:
        """A raw message has no outbox row: a worker SIGKILLed between kombu's pop and its unacked
        record loses it for good (seen here: the AOF held the RPOP and never the HSET). So no kill
        is made until the poison is dead-lettered."""
        def done() -> bool:
            letters = db.rows("SELECT event_id, payload FROM dead_letters")
            return all(any(m in (d["event_id"] or "") or m in (d["payload"] or "") for d in letters)
                       for m in markers)
        wait_for(done, timeout, f"poison {markers} to be dead-lettered", every=0.5)

    def producer(total: int, every_s: float, per: int) -> None:
        """Publish ``per`` events every ``every_s`` through the outbox until ``total`` are recorded."""
        publisher = Publisher(redis.url, database_url=url, connect_timeout_s=2, reply_timeout_s=5)
        picks = random.Random(seed + 1)
        recorded = 0
        try:
            while recorded < total and not stop.is_set():
                batch = [good_event(picks.choice(pool)) for _ in range(per)]
                recorded += per
                while not stop.is_set():
                    try:
                        publisher.publish(batch)
                        chaos.good.extend(batch)
                        break
                    except OutboxUnavailable:  # nothing recorded: publish the same events again
                        chaos.producer_db_retries += 1
                        time.sleep(0.5)
                    except BrokerUnavailable as exc:  # recorded: the sweeper sends them
                        assert exc.recorded
                        chaos.good.extend(batch)
                        chaos.left_to_sweeper += len(batch)
                        publisher.close()
                        publisher = Publisher(redis.url, database_url=url, connect_timeout_s=2,
                                              reply_timeout_s=5)
                        break
                time.sleep(every_s)
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            errors.append(exc)
        finally:
            publisher.close()

    def sweeper() -> None:
        while not stop.wait(SWEEP_EVERY_S):
            try:
                with Publisher.from_settings(settings) as publisher:
                    chaos.swept += sweep(settings, publisher, SWEEP_AFTER_S, lost_after_s=LOST_AFTER_S)
            except Exception as exc:  # noqa: BLE001  (database or broker down: the next tick tries again)
                chaos.sweep_errors[type(exc).__name__] += 1

    def kill_and_restart() -> None:
        worker.kill()
        chaos.kills.append(chaos.now())
        worker.start()
        chaos.worker_restarts += 1

    per, every = 4, STREAM_S * 4 / GOOD_EVENTS
    stream = threading.Thread(target=producer, args=(GOOD_EVENTS - BURST, every, per), daemon=True)
    sweeping = threading.Thread(target=sweeper, daemon=True)
    try:
        stream.start()
        sweeping.start()
        chaos.started = time.monotonic()
        # 1. Two SIGKILLs at random moments while the stream flows (a restart loads the model again).
        for _ in range(2):
            time.sleep(rng.uniform(2, 6))
            kill_and_restart()
        wait_dead_lettered(send_poison(2), 30)
        # 2. Redis killed (-9) and restarted on its AOF under the running worker and producer.
        time.sleep(rng.uniform(1, 4))
        redis.kill()
        chaos.redis_restarts += 1
        time.sleep(1.0)
        redis.start()
        # 3. A backlog (seconds of work), then Postgres really stopped for OUTAGE_S while the worker
        # holds it, and poison sent meanwhile.
        time.sleep(rng.uniform(3, 5))
        with Publisher(redis.url, database_url=url) as burst:
            batch = [good_event(rng.choice(pool)) for _ in range(BURST)]
            burst.publish(batch)
            chaos.good.extend(batch)
        time.sleep(rng.uniform(0.2, 0.6))
        down = time.monotonic()
        cluster.stop("fast")
        chaos.outage = (chaos.now(), chaos.now())
        during = send_poison(2)
        time.sleep(OUTAGE_S)
        cluster.start()
        chaos.outage = (chaos.outage[0], chaos.outage[0] + (time.monotonic() - down))
        chaos.db_back_at, chaos.before_outage = datetime.now(UTC), len(chaos.good)
        wait_dead_lettered(during, 90)
        # 4. One more SIGKILL while the stream catches up.
        time.sleep(rng.uniform(1, 5))
        kill_and_restart()
        assert len(chaos.kills) == KILLS
        stream.join(timeout=STREAM_S + 120)
        assert not stream.is_alive(), "the producer did not finish"
        chaos.stream_done = time.monotonic()
        if errors:
            raise errors[0]

        db.wait_events([e["event_id"] for e in chaos.good], DRAIN_TIMEOUT_S)  # tagged, failed or dead
        wait_for(lambda: redis.backlog() == (0, 0), 60, "the queue and the unacked set to empty")
        chaos.drained = time.monotonic()
    finally:
        stop.set()
        if not cluster.running:
            cluster.start()
        sweeping.join(timeout=30)
        raw.close()
        text, data = report_text(chaos, db, redis)
        print("\n" + text)
        if os.environ.get("TAGGER_CHAOS_REPORT"):
            Path(os.environ["TAGGER_CHAOS_REPORT"]).write_text(
                text + "\n\n" + json.dumps(data, indent=1, default=str) + "\n")

    # Every good event tagged exactly once.
    ids = [e["event_id"] for e in chaos.good]
    rows = db.events(ids)
    not_tagged = {i: rows.get(i, {}).get("status") for i in ids if rows.get(i, {}).get("status") != "tagged"}
    assert not_tagged == {}, f"{len(not_tagged)} good events not tagged:\n{text}"
    duplicates = db.rows("SELECT product_id, axis, value, source, count(*) AS n FROM product_tags "
                         "GROUP BY product_id, axis, value, source HAVING count(*) > 1")
    assert duplicates == [], duplicates[:5]
    per_product = db.rows("SELECT product_id, count(*) AS n FROM product_tags WHERE product_id = ANY(:p) "
                          "GROUP BY product_id", p=[e["product_id"] for e in chaos.good])
    assert len(per_product) == len(chaos.good)
    assert {r["n"] for r in per_product} == {tag_count}, "one set of model tags per product"
    # No dead letter but the poison's, and every poison message dead-lettered.
    letters = db.dead_letters()
    stray = [(d["event_id"], d["reason"]) for d in letters
             if not any(m in (d["event_id"] or "") or m in (d["payload"] or "") for m in chaos.poison)]
    assert stray == [], f"dead letters of good events:\n{text}"
    missing = [m for m in chaos.poison if not any(m in (d["event_id"] or "") or m in (d["payload"] or "")
                                                  for d in letters)]
    assert missing == [], f"poison never dead-lettered: {missing}"
    assert worker.alive()
