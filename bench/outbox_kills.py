"""Random SIGKILLs of a busy worker, with and without the outbox: how many events are lost.

Why (issue 11, point 7): kombu's Redis transport pops a message (BRPOP) before it records it as
unacked; a worker SIGKILLed in between loses that message for good. The outbox (shared/outbox.py)
records every event before it is sent, and the sweeper re-sends one still 'received' after
``lost_after_s``. Per mode, one run:

  1. a private PostgreSQL cluster (tests/pg_cluster.py) and redis-server, one real worker;
  2. ``--events`` events published by the Python Publisher in chunks of 8 every 0.1 s (faster than
     the worker tags, so it is always taking messages), ``database_url`` set or not;
  3. meanwhile ``--kills`` SIGKILLs at random moments, the worker restarted after each;
  4. then the sweeper (outbox mode only: ``lost_after_s`` short) until every event is tagged, or the
     queue and unacked set stay empty (no outbox: what is not tagged by then is lost).

Prints per mode: events, kills, tagged, lost, duplicate tag rows, sweeper re-sends, seconds.
Not a test (its no-outbox side is a matter of chance); numbers for docs/RELIABILITY.md.

    TAGGER_TEST_MODEL_DIR=shared/default_model .venv/bin/python -m bench.outbox_kills --kills 8 [--early]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from shared.config import SAMPLE_MANIFEST, Settings
from shared.db.migrate import upgrade
from shared.db.session import dispose_engines
from shared.publish import Publisher
from tests.pg_cluster import PgCluster
from tests.workers.db import Db
from tests.workers.procs import RedisServer, Worker
from workers.sweeper import sweep

REPO = Path(__file__).resolve().parents[1]


def titles() -> list[str]:
    from shared.ml.dataset import load_manifest, load_records

    return [r.text for r in load_records(load_manifest(SAMPLE_MANIFEST)) if r.text]


def run(mode: str, n: int, kills: int, seed: int, model_dir: Path, visibility_s: int, lost_after_s: float,
        gap: tuple[float, float] = (0.5, 3.0)) -> dict:
    rng = random.Random(seed)
    outbox = mode == "outbox"
    folder = Path(tempfile.mkdtemp(prefix=f"tagger-bench-{mode}-"))
    cluster = PgCluster()
    redis = RedisServer(folder)
    url = cluster.create_database("tagger")
    upgrade(url)
    db = Db(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAGGER_", "AWS_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
               TAGGER_BROKER_URL=redis.url, TAGGER_DATABASE_URL=url, TAGGER_MODEL_DIR=str(model_dir),
               TAGGER_CACHE_DIR=str(folder / "cache"), TAGGER_DEVICE="cpu", TAGGER_BATCH_SIZE="8",
               TAGGER_FLUSH_INTERVAL_S="0.2", TAGGER_VISIBILITY_TIMEOUT_S=str(visibility_s))
    worker = Worker(f"bench-{mode}", env, folder).start()
    settings = Settings(database_url=url, broker_url=redis.url, visibility_timeout_s=visibility_s)
    pool = titles()
    events = [{"event_id": f"b-{uuid.uuid4().hex[:12]}", "product_id": f"bp-{uuid.uuid4().hex[:10]}",
               "seller_id": "bench", "title": rng.choice(pool), "occurred_at": datetime.now(UTC).isoformat()}
              for _ in range(n)]
    swept = 0
    t0 = time.monotonic()
    try:
        def publish() -> None:
            with Publisher(redis.url, database_url=url if outbox else None) as publisher:
                for i in range(0, n, 8):
                    publisher.publish(events[i:i + 8])
                    time.sleep(0.1)

        producer = threading.Thread(target=publish)
        producer.start()
        kill_times = []
        for _ in range(kills):
            time.sleep(rng.uniform(*gap))
            worker.kill()
            kill_times.append(round(time.monotonic() - t0, 1))
            worker.start()
        producer.join()
        ids = [e["event_id"] for e in events]
        deadline = time.monotonic() + 240
        quiet_since = None
        while time.monotonic() < deadline:
            if outbox:
                with Publisher(redis.url) as publisher:
                    swept += sweep(settings, publisher, older_than_s=3, lost_after_s=lost_after_s)
            got = db.events(ids)
            tagged = sum(1 for r in got.values() if r["status"] == "tagged")
            if tagged == n:
                break
            if redis.backlog() == (0, 0):  # nothing left anywhere: wait out a restore, then stop
                quiet_since = quiet_since or time.monotonic()
                if not outbox and time.monotonic() - quiet_since > visibility_s + 15:
                    break
            else:
                quiet_since = None
            time.sleep(1.0)
        got = db.events(ids)
        tagged = sum(1 for r in got.values() if r["status"] == "tagged")
        duplicates = db.rows("SELECT count(*) AS n FROM (SELECT 1 FROM product_tags GROUP BY product_id, "
                             "axis, value, source HAVING count(*) > 1) d")[0]["n"]
        return {"mode": mode, "seed": seed, "kill_gap_s": gap, "events": n, "kills": len(kill_times),
                "kill_times_s": kill_times,
                "tagged": tagged, "lost": n - tagged, "duplicate_tag_rows": duplicates, "swept": swept,
                "seconds": round(time.monotonic() - t0, 1)}
    finally:
        worker.stop()
        redis.kill()
        db.close()
        dispose_engines()
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--mode", choices=("outbox", "no-outbox", "both"), default="both")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--visibility-s", type=int, default=5)
    parser.add_argument("--lost-after-s", type=float, default=15.0)
    parser.add_argument("--early", action="store_true",
                        help="Kill 0-1.5 s after each restart (default 0.5-3 s), while the restarted worker "
                             "takes its first messages from the backlog: where the window was seen open.")
    args = parser.parse_args()
    model_dir = Path(os.environ.get("TAGGER_TEST_MODEL_DIR") or REPO / "shared" / "default_model")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    modes = ("no-outbox", "outbox") if args.mode == "both" else (args.mode,)
    for mode in modes:
        print(run(mode, args.events, args.kills, seed, model_dir, args.visibility_s, args.lost_after_s,
                  (0.0, 1.5) if args.early else (0.5, 3.0)), flush=True)


if __name__ == "__main__":
    main()
