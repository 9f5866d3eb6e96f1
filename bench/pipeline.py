"""Pipeline throughput: the model alone vs. the whole path upload event -> Redis -> worker -> Postgres.

Why: the pipeline (issue 3) is worth its queue, batching and one-transaction writes only if the
model stays the bottleneck and batching pays. One run, on N products from fashion-small, measures

  (a) the raw model rate: the shipped default model (text encoder + image backbone + head) on
      PRE-DECODED inputs (decode/resize done before timing) at the worker's batch size;
  (b) end-to-end events/s from the first publish to the last commit, through Redis, a real
      ``celery worker`` process (threads pool, ``-c`` threads, the model loaded before publishing) and
      Postgres, with the images as file:// URIs;
  (c) the same with one task per event (a second worker run with TAGGER_BATCH_SIZE=1, fresh
      Redis db and database),

and prints (b)/(a) (target >= 0.85: queue, fetch, decode and database cost under 15% of the model's
own time), (b)/(c) (what batching buys) and p50/p99 latency of (b) from each event's publish to
its ``finished_at``. Events are published in one burst (``--publishers`` processes), so latency
includes the time an event waits in the queue behind the others.

Not a test: numbers for docs/BENCHMARKS.md. It FLUSHDBs the Redis db and drops and re-creates the
Postgres database it is given; nothing is downloaded. The last line reads
``e2e_over_model=R batched_over_unbatched=S p50_ms=X p99_ms=Y``.

``--null-model``: the plumbing's own ceiling (issue 13). The same worker (same Celery app, same
celery-batches batching, same writes), started through :mod:`bench.null_worker`, whose model costs
nothing but returns predictions of the shipped model's shape; text-only events (no image_uri); no
model measurement and no unbatched run. It prints the batches and, as its last line,
``plumbing_events_per_s=P write_ms_per_event=W p50_ms=X p99_ms=Y worker_cpu_ms_per_event=C`` (P:
events / seconds from the first publish to the last commit; W: the worker's batch_tagged write_ms
summed / events; C: the worker processes' user+sys CPU over the same span / events, which a busy
machine inflates less than wall times). ``--workers N`` starts N worker processes (each its own
connection, consumer thread and ``-c`` pool threads).
``--profile PATH`` runs that worker under cProfile and writes its pstats to PATH.

    .venv/bin/python -m bench.pipeline --n 512
    .venv/bin/python -m bench.pipeline --null-model --n 4000 --publish-chunk 100
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.databases import recreate_database
from shared.config import SAMPLE_MANIFEST, Settings
from shared.events import ProductUploaded

REPO = Path(__file__).resolve().parents[1]
FASHION_SMALL = REPO.parent / "shared" / "data" / "fashion-small" / "dataset.yaml"
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/tagger_bench"
QUEUE = "tagging"
BATCH_LOG = re.compile(r"batch_tagged n=(\d+) .*?infer_ms=(\d+) write_ms=(\d+)")


@dataclass
class Product:
    key: str
    text: str
    image: bytes | None


@dataclass
class ModelRate:
    version: str
    device: str
    threads: int
    pre_decoded_s: float
    predict_s: float


@dataclass
class RunResult:
    label: str
    batch: int
    n: int
    seconds: float  # first publish -> all events seen tagged
    publish_s: float  # first publish -> last publish
    latencies_ms: list[float]
    batches: list[tuple[int, int, int]] = field(default_factory=list)  # (size, infer_ms, write_ms)
    worker_cpu_s: float = float("nan")  # user+sys of the worker process(es), first publish -> done
    consumer_cpu_s: float = float("nan")  # the same, their main threads alone (the consumers)
    redis_cpu_s: float = float("nan")  # the same for redis-server (INFO cpu: the whole server)
    postgres_cpu_s: float = float("nan")  # the same for the whole Postgres server (when local)
    machine_busy: float = float("nan")  # share of all the machine's cores busy (anyone's) meanwhile

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def pct(self, q: float) -> float:
        import numpy as np

        return float(np.percentile(self.latencies_ms, q))


# --- inputs ---------------------------------------------------------------------------------


def load_products(n: int, manifest_path: Path | None, seed: int) -> tuple[Path, list[Product]]:
    """N products (a seeded sample; cycled with new keys when N exceeds the catalogue)."""
    from shared.ml.dataset import load_manifest, load_records, read_images

    path = manifest_path or (FASHION_SMALL if FASHION_SMALL.is_file() else SAMPLE_MANIFEST)
    manifest = load_manifest(path)
    records = load_records(manifest)
    chosen = random.Random(seed).sample(records, min(n, len(records)))
    images = read_images(manifest, [r.image_ref for r in chosen])
    products = []
    for i in range(n):
        rec = chosen[i % len(chosen)]
        key = rec.id if i < len(chosen) else f"{rec.id}-{i // len(chosen)}"
        text = (rec.text or "untitled product")[:500]
        products.append(Product(key, text, images.get(rec.image_ref) if rec.image_ref else None))
    return path, products


def write_images(products: list[Product], folder: Path) -> dict[str, str | None]:
    """Each product's photo as a file; returns product key -> file:// URI (None: no photo)."""
    folder.mkdir(parents=True, exist_ok=True)
    uris: dict[str, str | None] = {}
    for p in products:
        if p.image is None:
            uris[p.key] = None
            continue
        path = folder / f"{p.key}.jpg"
        path.write_bytes(p.image)
        uris[p.key] = path.as_uri()
    return uris


# --- (a) the model alone ------------------------------------------------------------------


def measure_model(products: list[Product], batch: int, settings: Settings, streams: int = 1) -> ModelRate:
    """Seconds for encoders + head on pre-decoded inputs, and for ``predict()`` from image bytes,
    with the worker's layout: ``streams`` batches at once (its -c), ``settings.torch_threads`` each."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    from shared.ml.device import set_cpu_threads
    from shared.ml.features import text_features
    from shared.ml.predictor import Item, Tagger

    set_cpu_threads(settings.torch_threads)
    tagger = Tagger.load(settings=settings, cache=None)
    enc = tagger.image_encoder
    prepared = enc.prepare_many([p.image for p in products])  # decode + resize: not timed
    ready = []
    for start in range(0, len(products), batch):
        texts = [p.text for p in products[start : start + batch]]
        rows = [i for i in range(len(texts)) if isinstance(prepared[start + i], tuple)]
        chunks = []  # the image encoder's own chunking, as in ImageEncoder.encode
        for c in range(0, len(rows), enc.batch_size):
            sub = rows[c : c + enc.batch_size]
            chunks.append((sub, torch.stack([prepared[start + i][0] for i in sub]),
                           np.stack([prepared[start + i][1] for i in sub])))
        ready.append((texts, chunks))

    def run(texts: list[str], chunks: list) -> None:
        tx, tm = text_features(tagger.text_encoder, texts, None)
        ix = np.zeros((len(texts), enc.dim), np.float32)
        im = np.zeros(len(texts), bool)
        for rows, pixels, colours in chunks:
            ix[rows, : enc.backbone_dim] = enc.embed_prepared(pixels)
            ix[rows, enc.backbone_dim :] = colours
            im[rows] = True
        tagger.probabilities(tx, tm, ix, im, lexical=tagger.lexical(texts), offsets=tagger.offsets(texts))

    items = [Item(p.text, p.image) for p in products]
    batches = [items[start : start + batch] for start in range(0, len(items), batch)]
    with ThreadPoolExecutor(streams, thread_name_prefix="model") as pool:
        list(pool.map(lambda r: run(*r), ready[:streams]))  # warm-up, every stream
        t0 = time.perf_counter()
        list(pool.map(lambda r: run(*r), ready))
        pre_decoded_s = time.perf_counter() - t0

        list(pool.map(lambda b: tagger.predict(b, top_k=3), batches[:streams]))
        t0 = time.perf_counter()
        list(pool.map(lambda b: tagger.predict(b, top_k=3), batches))
        predict_s = time.perf_counter() - t0

    return ModelRate(tagger.version, str(tagger.device), torch.get_num_threads(), pre_decoded_s, predict_s)


def release_model() -> None:
    """Free what :func:`measure_model` loaded (it is unreachable once it returns): the worker is next."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- services -------------------------------------------------------------------------------


def redis_cpu_s(url: str) -> float:
    """redis-server's user + system CPU seconds so far (INFO cpu; every client of that server)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


def reset_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


class WorkerProcess:
    """``celery -A workers.app worker`` on the tagging queue (threads pool, ``concurrency`` threads)."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path, concurrency: int = 1,
                 null_model: bool = False) -> None:
        self.name, self.env, self.log_path, self.concurrency = name, env, log_path, concurrency
        # bench.null_worker: the same celery main with a zero-cost model (benchmark only)
        self.entry = ["-m", "bench.null_worker"] if null_model else ["-m", "celery"]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float) -> None:
        """Start it and wait until the model is loaded, the consumer ready and every pool thread warm."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.entry, "-A", "workers.app", "worker", "-Q", QUEUE,
                 "-P", "threads", "-c", str(self.concurrency), "--without-gossip", "--without-mingle",
                 "--loglevel=INFO", "-n", f"{self.name}@%h"],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            text = self.log()
            if "model_loaded" in text and " ready." in text and "pool_warmed" in text:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} not ready after {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.2)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def cpu_s(self, main_thread: bool = False) -> float:
        """User + system CPU seconds so far of the worker process (every thread), or of its main
        thread alone, where celery runs the consumer's event loop (Linux /proc)."""
        assert self.proc is not None
        pid = self.proc.pid
        stat = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat")
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def batches(self) -> list[tuple[int, int, int]]:
        return [(int(a), int(b), int(c)) for a, b, c in BATCH_LOG.findall(self.log())]

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# --- publishing -----------------------------------------------------------------------------


def _publish_shard(broker: str, events: list[dict], chunk: int, barrier: Any, out: Any,
                   per_message: int | None = None) -> None:
    """In a child process: connect, wait for the others, then send (``per_message`` events per task
    message at most; None: the Publisher's default); report a wall time per event taken just before
    its send (the earliest moment a worker could see it)."""
    from shared.publish import Publisher

    stamps: list[tuple[str, float]] = []
    with Publisher(broker, QUEUE, events_per_message=per_message) as pub:
        pub.check()
        parsed = [ProductUploaded.model_validate(e) for e in events]
        barrier.wait(120)
        for s in range(0, len(parsed), chunk):
            part = parsed[s : s + chunk]
            t = time.time()
            pub.publish(part)
            stamps.extend((e.event_id, t) for e in part)
    out.put(stamps)


def publish_burst(broker: str, events: list[ProductUploaded], processes: int, chunk: int,
                  per_message: int | None = None) -> dict[str, float]:
    """Send every event as fast as ``processes`` publishers can; returns event id -> publish time."""
    ctx = mp.get_context("spawn")  # this process holds torch threads (and maybe CUDA): no fork
    barrier, out = ctx.Barrier(processes + 1), ctx.Queue()
    payloads = [e.model_dump(mode="json") for e in events]
    procs = [ctx.Process(target=_publish_shard,
                         args=(broker, payloads[k::processes], chunk, barrier, out, per_message),
                         daemon=True) for k in range(processes)]
    for p in procs:
        p.start()
    try:
        barrier.wait(120)  # every publisher connected: go
        stamps: dict[str, float] = {}
        for _ in procs:
            stamps.update(out.get(timeout=600))
        return stamps
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)


# --- (b), (c) end to end --------------------------------------------------------------------


def make_events(products: list[Product], uris: dict[str, str | None], tag: str) -> list[ProductUploaded]:
    now = datetime.now(UTC)
    return [
        ProductUploaded(event_id=f"{tag}-{i}-{p.key}", product_id=f"{tag}-{p.key}", seller_id="bench",
                        title=p.text, image_uri=uris.get(p.key), locale="en-IN", occurred_at=now)
        for i, p in enumerate(products)
    ]


def wait_all_tagged(url: str, n: int, workers: list[WorkerProcess], timeout: float, poll_s: float) -> float:
    """Poll tagging_events until all ``n`` rows are tagged; returns the wall time it saw that."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + timeout
    q_status = sa.text("SELECT status, count(*) FROM tagging_events GROUP BY status")
    q_dead = sa.text("SELECT count(*) FROM dead_letters")
    stuck_since: float | None = None  # every event settled, some failed (retried, or final)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while True:
                counts = dict(conn.execute(q_status).all())
                if counts.get("tagged", 0) >= n:
                    return time.time()
                dead = conn.execute(q_dead).scalar_one()
                settled = counts.get("tagged", 0) + counts.get("failed", 0) >= n
                stuck_since = (stuck_since or time.monotonic()) if settled else None
                if dead or counts.get("dead") or (stuck_since and time.monotonic() - stuck_since > 30):
                    raise RuntimeError(f"not every event was tagged: {counts}, dead_letters={dead}\n"
                                       f"{workers[0].tail()}")
                for worker in workers:
                    worker.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"timed out after {timeout:.0f}s: {counts} of {n}\n"
                                       f"{workers[0].tail()}")
                time.sleep(poll_s)
    finally:
        engine.dispose()


def check_nothing_lost(events: list[ProductUploaded], stamps: dict[str, float], finished: dict[str, float],
                       redis_url: str) -> None:
    """Every event published has its own tagging_events row, finished, and Redis holds nothing: no
    message waiting or delivered unacked (an envelope is acked only once all its events are written)."""
    import redis

    ids = {e.event_id for e in events}
    missing = ids - finished.keys()
    unsent = ids - stamps.keys()
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        deadline = time.monotonic() + 30  # the last batch's ack follows its commit
        while (backlog := (client.llen(QUEUE), client.hlen("unacked"))) != (0, 0) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        client.close()
    print(f"check: {len(ids)} events published, {len(ids & finished.keys())} tagged rows, "
          f"{len(finished) - len(ids & finished.keys())} other rows; Redis queue {backlog[0]}, unacked "
          f"{backlog[1]}; lost: {len(missing)}")
    if missing or unsent or backlog != (0, 0):
        raise SystemExit(f"LOST OR STUCK: {len(missing)} events without a finished row "
                         f"(e.g. {sorted(missing)[:3]}), {len(unsent)} never published, Redis {backlog}")


def finished_times(url: str) -> dict[str, float]:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT event_id, finished_at FROM tagging_events")).all()
    finally:
        engine.dispose()
    # timestamptz comes back timezone-aware, so .timestamp() is epoch seconds like time.time()
    return {eid: fin.timestamp() for eid, fin in rows if fin is not None}


def run_pipeline(label: str, batch: int, events: list[ProductUploaded], args: argparse.Namespace,
                 workdir: Path, concurrency: int = 1) -> RunResult:
    """Fresh Redis db and database, ``--workers`` ready worker processes (each ``-c concurrency``),
    one burst of events, wait for every commit."""
    reset_redis(args.redis)
    recreate_database(args.postgres)
    env = {
        **os.environ, "TAGGER_BROKER_URL": args.redis, "TAGGER_DATABASE_URL": args.postgres,
        "TAGGER_ALLOW_FILE_URIS": "true", "TAGGER_BATCH_SIZE": str(batch), "TAGGER_TAGGING_QUEUE": QUEUE,
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TAGGER_TORCH_THREADS": str(args.torch_threads),
    }
    if args.profile:
        env["TAGGER_BENCH_PROFILE"] = str(args.profile.resolve())
    if getattr(args, "no_task_events", False):
        env["TAGGER_BENCH_NO_TASK_EVENTS"] = "1"
    if getattr(args, "reuse_redis_client", False):
        env["TAGGER_BENCH_REUSE_REDIS_CLIENT"] = "1"
    if getattr(args, "switch_interval", None):
        env["TAGGER_BENCH_SWITCH_INTERVAL"] = str(args.switch_interval)
    if getattr(args, "model_ms", None):
        env["TAGGER_BENCH_NULL_MODEL_MS"] = str(args.model_ms)
    logs = args.logs or workdir
    logs.mkdir(parents=True, exist_ok=True)
    n_workers = getattr(args, "workers", 1)
    workers = []
    for i in range(n_workers):
        suffix = f"-{i + 1}" if n_workers > 1 else ""
        log_path = logs / f"worker-{label}{suffix}.log"
        log_path.unlink(missing_ok=True)
        workers.append(WorkerProcess(f"bench-{label}{suffix}-{os.getpid()}", env, log_path, concurrency,
                                     args.null_model))
    try:
        for w in workers:  # all loading at once, then wait for each
            w.launch()
        for w in workers:
            w.wait_ready(args.ready_timeout)
        from bench.ingest import machine_busy_seconds, postgres_cpu, postmaster_pid

        postmaster = postmaster_pid(args.postgres)
        cpu0, main0 = sum(w.cpu_s() for w in workers), sum(w.cpu_s(True) for w in workers)
        redis0, pg0, busy0 = redis_cpu_s(args.redis), postgres_cpu(postmaster), machine_busy_seconds()
        stamps = publish_burst(args.redis, events, args.publishers, args.publish_chunk,
                               getattr(args, "events_per_message", None))
        done = wait_all_tagged(args.postgres, len(events), workers, args.timeout, args.poll)
        cpu, redis_cpu = sum(w.cpu_s() for w in workers) - cpu0, redis_cpu_s(args.redis) - redis0
        main = sum(w.cpu_s(True) for w in workers) - main0
        busy1 = machine_busy_seconds()
        pg_cpu, busy = postgres_cpu(postmaster) - pg0, (busy1[0] - busy0[0]) / (busy1[1] - busy0[1])
        batches = [b for w in workers for b in w.batches()]
    finally:
        for w in workers:
            w.stop()
    finished = finished_times(args.postgres)
    check_nothing_lost(events, stamps, finished, args.redis)
    first, last = min(stamps.values()), max(stamps.values())
    lat = [(finished[e.event_id] - stamps[e.event_id]) * 1000 for e in events]
    return RunResult(label, batch, len(events), done - first, last - first, lat, batches, cpu, main,
                     redis_cpu, pg_cpu, busy)


# --- report ---------------------------------------------------------------------------------


def describe_batches(r: RunResult) -> str:
    if not r.batches:
        return f"{r.label}: no batch_tagged lines in the worker log"
    sizes = [b[0] for b in r.batches]
    infer, write = sum(b[1] for b in r.batches) / 1000, sum(b[2] for b in r.batches) / 1000
    busy = infer + write
    return (f"{r.label}: {len(sizes)} batches, size mean {sum(sizes) / len(sizes):.1f} "
            f"(min {min(sizes)}, max {max(sizes)}); in batches {busy:.2f}s (summed over threads) of "
            f"{r.seconds:.2f}s wall "
            f"(fetch+decode+model {infer:.2f}s, db write {write:.2f}s, outside batches "
            f"{max(0.0, r.seconds - busy):.2f}s); publishing took {r.publish_s:.2f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="products (events per run)")
    ap.add_argument("--batch", type=int, default=None,
                    help="worker batch size (default: Settings().batch_size, i.e. TAGGER_BATCH_SIZE or 32)")
    ap.add_argument("--manifest", type=Path, default=None,
                    help="dataset manifest (default: ../shared/data/fashion-small, else shared/sample)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the product sample")
    ap.add_argument("--redis", default=DEFAULT_REDIS, help="broker URL; this db is FLUSHDB'd")
    ap.add_argument("--postgres", default=DEFAULT_POSTGRES, help="database URL; dropped and re-created")
    ap.add_argument("--concurrency", "-c", type=int, default=0,
                    help="batches the worker runs at once (tagger worker -c; 0: its default, 2 on a GPU "
                         "as on a CPU of 2 cores or more); (a) runs as many streams")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch CPU threads per forward pass (TAGGER_TORCH_THREADS; 0: the worker's "
                         "default, cores / concurrency on the CPU)")
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes")
    ap.add_argument("--publish-chunk", type=int, default=1, help="events per publish() call")
    ap.add_argument("--poll", type=float, default=0.05, help="seconds between completion polls")
    ap.add_argument("--ready-timeout", type=float, default=300, help="seconds for a worker to load the model")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds for one run to finish")
    ap.add_argument("--logs", type=Path, default=None, help="keep the worker logs in this folder")
    ap.add_argument("--null-model", action="store_true",
                    help="the plumbing's ceiling: the same worker with a zero-cost model "
                         "(bench.null_worker), text-only events, no model or unbatched run")
    ap.add_argument("--profile", type=Path, default=None,
                    help="with --null-model: run the worker under cProfile, pstats to this file")
    ap.add_argument("--no-task-events", action="store_true",
                    help="with --null-model: an experiment, the worker sends no Celery task events")
    ap.add_argument("--reuse-redis-client", action="store_true",
                    help="with --null-model: an experiment, kombu's Redis channel reuses one redis-py "
                         "client instead of building one per command (bench.null_worker)")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="with --null-model: an experiment, sys.setswitchinterval(S) in the worker "
                         "(Python's default: 0.005 s)")
    ap.add_argument("--model-ms", type=float, default=None,
                    help="with --null-model: a GPU stand-in, the model waits this many ms per event "
                         "(no CPU, the GIL released); prints e2e over that model's own rate")
    ap.add_argument("--events-per-message", type=int, default=None,
                    help="events per task message the publishers send (TAGGER_EVENTS_PER_MESSAGE; "
                         "default: the Publisher's, 50; 1: one message per event, as before envelopes)")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes, each with its own connection, consumer and -c threads "
                         "(total concurrency: workers x c)")
    ap.add_argument("--skip-unbatched", action="store_true",
                    help="no run (c) (one task per event): a shorter run, e.g. bench/gpu.sh")
    args = ap.parse_args()
    if (args.profile or args.no_task_events or args.reuse_redis_client or args.switch_interval
            or args.model_ms) and not args.null_model:
        ap.error("--profile, --no-task-events, --reuse-redis-client, --switch-interval and --model-ms "
                 "need --null-model")
    if args.n < 1 or args.concurrency < 0 or args.torch_threads < 0 or args.workers < 1:
        ap.error("--n and --workers must be at least 1, --concurrency and --torch-threads at least 0")
    if args.profile and args.workers > 1:
        ap.error("--profile profiles one worker process: use --workers 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    base = Settings()
    from shared.ml.device import worker_layout

    args.concurrency, args.torch_threads = worker_layout(base.device, args.concurrency, args.torch_threads)
    batch = args.batch or base.batch_size
    settings = Settings(batch_size=batch, torch_threads=args.torch_threads)

    manifest, products = load_products(args.n, args.manifest, args.seed)
    if args.null_model:
        null_model(args, batch, settings, manifest, products)
        return
    with_images = sum(p.image is not None for p in products)
    model = measure_model(products, batch, settings, args.concurrency)
    release_model()
    a_rate = args.n / model.pre_decoded_s

    with tempfile.TemporaryDirectory(prefix="tagger-bench-") as tmp:
        workdir = Path(tmp)
        uris = write_images(products, workdir / "images")
        runs = [run_pipeline("batched", batch, make_events(products, uris, "b"), args, workdir,
                             args.concurrency)]
        if not args.skip_unbatched:
            runs.append(run_pipeline("unbatched", 1, make_events(products, uris, "c"), args, workdir,
                                     args.concurrency))
    reset_redis(args.redis)
    b, c = runs[0], runs[-1] if len(runs) > 1 else None

    print(f"products: {args.n} from {manifest} ({with_images} with images); model {model.version} on "
          f"{model.device}; {args.concurrency} stream(s) x {model.threads} torch thread(s); "
          f"{os.cpu_count()} CPUs")
    print(f"settings: batch {batch}, flush_interval {settings.flush_interval_s}s, prefetch "
          f"{2 * batch * args.concurrency} (batched) / {2 * args.concurrency} (unbatched), "
          f"publishers {args.publishers} x chunk "
          f"{args.publish_chunk}, redis {args.redis}, postgres {args.postgres}")
    print()
    print(f"{'measurement':<40} {'batch':>5} {'events':>6} {'seconds':>8} {'events/s':>9} "
          f"{'p50_ms':>7} {'p99_ms':>7}")
    rows = [("(a) model, pre-decoded inputs", batch, model.pre_decoded_s, None),
            ("    model via predict() from bytes", batch, model.predict_s, None),
            ("(b) e2e Redis->worker->Postgres", batch, b.seconds, b)]
    if c is not None:
        rows.append(("(c) e2e, one task per event", 1, c.seconds, c))
    for name, bs, secs, run in rows:
        p50 = f"{run.pct(50):7.0f}" if run else f"{'-':>7}"
        p99 = f"{run.pct(99):7.0f}" if run else f"{'-':>7}"
        print(f"{name:<40} {bs:>5} {args.n:>6} {secs:>8.2f} {args.n / secs:>9.1f} {p50} {p99}")
    print()
    for r in runs:
        print(describe_batches(r))
    ratio_a = b.rate / a_rate
    ratio_c = f"{b.rate / c.rate:.2f}" if c is not None else "-"
    p50, p99 = round(b.pct(50)), round(b.pct(99))
    print(f"(b)/(a) = {ratio_a:.2f} (target >= 0.85)   (b)/(c) = {ratio_c}   "
          f"(b) latency publish -> commit: p50 {p50} ms, p99 {p99} ms")
    print(f"e2e_over_model={ratio_a:.2f} batched_over_unbatched={ratio_c} p50_ms={p50} p99_ms={p99}")


def null_model(args: argparse.Namespace, batch: int, settings: Settings, manifest: Path,
               products: list[Product]) -> None:
    """The plumbing's ceiling: one batched run through bench.null_worker, text-only events."""
    import subprocess as sp

    with tempfile.TemporaryDirectory(prefix="tagger-bench-") as tmp:
        r = run_pipeline("null", batch, make_events(products, {}, "n"), args, Path(tmp), args.concurrency)
    reset_redis(args.redis)
    n_batched = sum(b[0] for b in r.batches)
    write_ms = sum(b[2] for b in r.batches) / n_batched if n_batched else float("nan")
    load = sp.run(["uptime"], capture_output=True, text=True).stdout.strip()
    events = "no task events (experiment)" if args.no_task_events else "task events on"
    if args.reuse_redis_client:
        events += ", one redis-py client per channel (experiment)"
    if args.switch_interval:
        events += f", sys.setswitchinterval({args.switch_interval}) (experiment)"
    if args.model_ms:
        events += f", a GPU stand-in waiting {args.model_ms} ms per event"
    print(f"products: {args.n} from {manifest}, text only; NULL model (bench.null_worker), {events}; "
          f"{args.workers} worker process(es) x {args.concurrency} thread(s) = concurrency "
          f"{args.workers * args.concurrency}; {os.cpu_count()} CPUs; load: {load}")
    from shared.publish import DEFAULT_EVENTS_PER_MESSAGE

    per = args.events_per_message or DEFAULT_EVENTS_PER_MESSAGE
    print(f"settings: batch {batch} events, flush_interval {settings.flush_interval_s}s, prefetch "
          f"{2 * batch * args.concurrency} messages per process, publishers {args.publishers} x chunk "
          f"{args.publish_chunk}, {per} events per message, "
          f"redis {args.redis}, postgres {args.postgres}")
    print(describe_batches(r))
    print(f"null-model plumbing: {r.rate:.1f} events/s, write {write_ms:.2f} ms/event (worker's "
          f"write_ms / n), latency publish -> commit p50 {r.pct(50):.0f} ms, p99 {r.pct(99):.0f} ms")
    cpu_ms = 1000 * r.worker_cpu_s / r.n
    print(f"CPU per event, first publish -> last commit: worker process(es) {cpu_ms:.2f} ms (user+sys, "
          f"every thread; consumer thread {1000 * r.consumer_cpu_s / r.n:.2f} ms), redis-server "
          f"{1000 * r.redis_cpu_s / r.n:.2f} ms (whole server), Postgres "
          f"{1000 * r.postgres_cpu_s / r.n:.2f} ms (whole server); the machine's cores were "
          f"{100 * r.machine_busy:.0f}% busy meanwhile (everyone's work, publishers' start-up included)")
    if args.profile:
        print(f"profile: {args.profile} (python -m pstats {args.profile})")
    if args.model_ms:  # the stand-in alone would tag 1000 / model_ms events a second
        model_rate = 1000 / args.model_ms
        print(f"GPU stand-in: {model_rate:.0f} events/s alone; end to end {r.rate:.1f}: "
              f"e2e/model {r.rate / model_rate:.2f}")
        print(f"e2e_over_model={r.rate / model_rate:.3f} plumbing_events_per_s={r.rate:.1f} "
              f"write_ms_per_event={write_ms:.2f} concurrency={args.concurrency}")
        return
    print(f"plumbing_events_per_s={r.rate:.1f} write_ms_per_event={write_ms:.2f} "
          f"p50_ms={round(r.pct(50))} p99_ms={round(r.pct(99))} worker_cpu_ms_per_event={cpu_ms:.2f} "
          f"events_per_message={per}")


if __name__ == "__main__":
    main()
