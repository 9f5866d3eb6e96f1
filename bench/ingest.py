"""Ingest throughput: sustained accepted events/s through ``POST /v1/events`` on loopback, p50/p99.

Why: the sellers' upload service talks to the API, not to Redis; every accepted event costs a
Postgres insert + commit, a publish to Redis and an "enqueued" update + commit (issue 5 item 8).
One run starts, all of its own and all thrown away at the end:

  - a Postgres database ``tagger_bench_ingest_<pid>``, migrated with alembic (dropped at the end);
  - a private ``redis-server`` on a free loopback port, configured like docker/compose.yaml
    (noeviction, AOF everysec); no worker runs, so the tagging queue simply grows;
  - the real API, ``uvicorn api.app:create_app --factory`` in a subprocess (``--workers``), with a
    producer key made by shared.apikeys.create_key;

then ``--clients`` concurrent clients (asyncio + httpx, one keep-alive connection each) POST back
to back for ``--warmup`` + ``--seconds`` seconds, each request a batch of ``--batch`` events built
from the committed sample's products (shared/sample) with fresh event ids. Only requests that
complete inside the measured window count: events/s = events accepted (202, ids listed) in them /
seconds; latency is per request, send to answer. At the end every accepted event id must be a
tagging_events row and a message on the Redis queue; a lost one fails the run (exit 1).

Not a test: numbers for docs/BENCHMARKS.md. The last line reads ``events_per_s=E p50_ms=X p99_ms=Y``.

    .venv/bin/python -m bench.ingest --clients 8 --batch 1 --seconds 20

``--compare-key-cache`` runs that measurement with the API's verified-key cache off and on
(api/auth.py), alternating, ``--rounds`` times each, and ends with
``key_cache_ratio=R off_events_per_s=A on_events_per_s=B`` (R: the ratio of the medians).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.databases import drop_database, recreate_database

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
QUEUE = "tagging"
VERSIONS = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "sqlalchemy", "psycopg",
            "celery", "kombu", "redis", "httpx")


# --- services -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, alive: Any = None) -> None:
    """Poll ``check()`` until truthy; ``alive()`` may raise to stop early (a dead subprocess)."""
    deadline = time.monotonic() + timeout
    while not check():
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


class RedisServer:
    """A private redis-server (noeviction, AOF everysec like docker/compose.yaml) in a temp folder."""

    def __init__(self, folder: Path, binary: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder),
             "--maxmemory-policy", "noeviction", "--appendonly", "yes", "--appendfsync", "everysec"],
            stdout=open(folder / "redis.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        wait_until(self._ping, 10, f"redis-server on port {self.port}", self._alive)

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30, socket_connect_timeout=5)

    def _ping(self) -> bool:
        import redis

        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}")

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGKILL)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def bench_database_url(server_url: str) -> str:
    """This run's own database on the server ``server_url`` points at (named after the process)."""
    import sqlalchemy as sa

    name = f"tagger_bench_ingest_{os.getpid()}"
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def producer_token(url: str) -> str:
    from shared.apikeys import create_key
    from shared.db.session import dispose_engines, session_scope

    with session_scope(url) as session:
        token = create_key(session, "bench-ingest", "producer")[1]
    dispose_engines()
    return token


class ApiServer:
    """``uvicorn api.app:create_app --factory`` on a free loopback port; its output in a log file."""

    def __init__(self, env: dict[str, str], workers: int, log_path: Path,
                 profile: Path | None = None, before: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        # --profile: uvicorn under bench.profiled (cProfile, every thread), pstats written when it stops
        entry = ["-m", "bench.profiled", str(profile), "uvicorn"] if profile else ["-m", "uvicorn"]
        if before:  # --before: the ingest path as it was (bench.api_before), in this one process
            entry = ["-m", "bench.api_before", *entry[1:]]
        cmd = [sys.executable, *entry, "api.app:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", str(workers), "--log-level", "warning",
               "--no-access-log"]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        import httpx

        def ready() -> bool:
            try:
                return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, f"the API on {self.base}/readyz", self.check_alive)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the API exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def pids(self) -> list[int]:
        """uvicorn and its worker processes (with --workers > 1 the parent only supervises)."""
        return [self.proc.pid, *descendants(self.proc.pid)]

    def stop(self) -> None:
        stop_process(self.proc)


# --- CPU accounting (Linux /proc; where the two cores went during the window) ----------------


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pids: list[int], *, reaped: bool = False) -> float:
    """utime + stime of these processes, in seconds (gone ones count 0); with ``reaped``, plus that
    of their children that have exited (how a short-lived Postgres backend is still counted)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            if reaped:
                total += int(fields[13]) + int(fields[14])
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


def postmaster_pid(url: str) -> int | None:
    """The Postgres server's main process (the parent of our backend), when it runs on this machine."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            try:
                return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                return None
    finally:
        engine.dispose()


def postgres_cpu(postmaster: int | None) -> float:
    """CPU seconds of the whole Postgres server (every database): the postmaster, its live children
    and the ones that exited (a backend per new connection)."""
    if postmaster is None:
        return float("nan")
    return cpu_seconds([postmaster], reaped=True) + cpu_seconds(descendants(postmaster))


def database_counters(url: str) -> tuple[int, int]:
    """(sessions opened, transactions committed) so far on the bench database (pg_stat_database)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            row = conn.execute(sa.text("SELECT sessions, xact_commit FROM pg_stat_database "
                                       "WHERE datname = current_database()")).one()
            return int(row.sessions), int(row.xact_commit)
    finally:
        engine.dispose()


@dataclass
class CpuSnapshot:
    """CPU seconds so far of each party; the difference of two is where the window's CPU went."""

    api: float
    api_each: list[float]  # per API process, in api_pids order
    postgres: float
    redis: float
    bench: float
    busy: float
    total: float

    @classmethod
    def take(cls, api_pids: list[int], postmaster: int | None, redis_pid: int) -> CpuSnapshot:
        busy, total = machine_busy_seconds()
        each = [cpu_seconds([pid]) for pid in api_pids]
        return cls(sum(each), each, postgres_cpu(postmaster), cpu_seconds([redis_pid]),
                   time.process_time(), busy, total)


# --- load -----------------------------------------------------------------------------------


def sample_products() -> list[dict[str, Any]]:
    """The committed sample's products as event templates (no event_id yet)."""
    from shared.config import SAMPLE_MANIFEST
    from shared.ml.dataset import load_manifest, load_records

    now = datetime.now(UTC).isoformat()
    out = []
    for rec in load_records(load_manifest(SAMPLE_MANIFEST)):
        image = f"s3://catalogue/sample/{Path(rec.image_ref).name}" if rec.image_ref else None
        out.append({"type": "product.uploaded", "version": 1, "product_id": f"sample-{rec.id}",
                    "seller_id": "bench-seller", "title": rec.text or "untitled product",
                    "image_uri": image, "locale": "en-IN", "occurred_at": now})
    return out


@dataclass
class Request:
    sent: float  # perf_counter
    done: float
    status: int  # 0: no answer (connection error, timeout)
    accepted: int
    queued: bool
    error: str = ""


@dataclass
class Load:
    requests: list[Request] = field(default_factory=list)
    accepted_ids: list[str] = field(default_factory=list)
    not_queued_ids: list[str] = field(default_factory=list)  # accepted, answer said queued: false


async def client_loop(k: int, base: str, token: str, products: list[dict[str, Any]], batch: int,
                      start: asyncio.Event, until: list[float], run: str, load: Load) -> None:
    """One client: one keep-alive connection, requests back to back until ``until[0]``."""
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    seq = 0
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60, headers=headers) as http:
        await http.get("/healthz")  # open the connection before the clock starts
        await start.wait()
        while time.perf_counter() < until[0]:
            events = []
            for _ in range(batch):
                product = products[(k * 7919 + seq) % len(products)]
                events.append({**product, "event_id": f"{run}-{k}-{seq}"})
                seq += 1
            body = json.dumps(events if batch > 1 else events[0]).encode()
            sent = time.perf_counter()
            try:
                answer = await http.post("/v1/events", content=body)
            except httpx.HTTPError as exc:
                load.requests.append(Request(sent, time.perf_counter(), 0, 0, False, type(exc).__name__))
                continue
            done = time.perf_counter()
            if answer.status_code != 202:
                load.requests.append(Request(sent, done, answer.status_code, 0, False, answer.text[:200]))
                continue
            result = answer.json()
            ids = result["accepted"]
            expected = [e["event_id"] for e in events]
            if ids != expected:  # every event is valid and fresh: all must come back accepted
                load.requests.append(Request(sent, done, 202, len(ids), result["queued"],
                                             f"accepted {len(ids)} of {len(expected)}: {result['rejected']}"))
            else:
                load.requests.append(Request(sent, done, 202, len(ids), result["queued"]))
            load.accepted_ids.extend(ids)
            if not result["queued"]:
                load.not_queued_ids.extend(ids)


async def drive(args: argparse.Namespace, base: str, token: str, products: list[dict[str, Any]],
                on_edge: Any, progress: Any) -> tuple[Load, float, float]:
    """Run the clients; returns the load and the measured window (perf_counter start, end).
    ``on_edge(i)`` runs on a thread (the clients go on) when the window opens (0) and closes (1)."""
    load, start = Load(), asyncio.Event()
    until = [float("inf")]
    run = f"bi-{uuid.uuid4().hex[:8]}"
    tasks = [asyncio.create_task(client_loop(k, base, token, products, args.batch, start, until, run, load))
             for k in range(args.clients)]
    await asyncio.sleep(0.5)  # every client has connected (or failed: gather below raises)
    t0 = time.perf_counter()
    window = (t0 + args.warmup, t0 + args.warmup + args.seconds)
    until[0] = window[1]
    start.set()
    edges = 0
    while not all(t.done() for t in tasks):
        now = time.perf_counter()
        if edges < 2 and now >= window[edges]:
            await asyncio.to_thread(on_edge, edges)
            edges += 1
            continue
        progress(min(now - t0, args.warmup + args.seconds), len(load.accepted_ids))
        wake = window[edges] - now if edges < 2 else 0.25  # wake on time for the next edge
        await asyncio.sleep(max(0.0, min(0.25, wake)))
    await asyncio.gather(*tasks)
    if edges < 2:  # the clients stopped just before the loop saw the window close
        on_edge(1)
    return load, *window


# --- checks ---------------------------------------------------------------------------------


def queued_ids(server: RedisServer) -> tuple[Counter[str], int]:
    """Event ids carried by every message on the tagging queue's lists (kombu's priority lists
    included; an envelope's every event), and how many messages carry them."""
    from shared.metrics import queue_keys
    from shared.tasks import events_of

    ids: Counter[str] = Counter()
    messages = 0
    with server.client() as c:
        for key in queue_keys(QUEUE):
            n = c.llen(key)
            for start in range(0, n, 5000):
                for raw in c.lrange(key, start, start + 4999):
                    message = json.loads(raw)
                    body = message["body"]
                    if message.get("properties", {}).get("body_encoding") == "base64":
                        body = base64.b64decode(body)
                    _args, kwargs, _embed = json.loads(body)
                    messages += 1
                    for event in events_of(kwargs):
                        ids[event["event_id"]] += 1
    return ids, messages


def recorded_ids(url: str) -> dict[str, bool]:
    """event_id -> whether the row says it reached the broker (enqueued_at set)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT event_id, enqueued_at IS NOT NULL FROM tagging_events"))
            return {eid: bool(enq) for eid, enq in rows}
    finally:
        engine.dispose()


def server_facts(url: str, redis_server: RedisServer) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            pg = conn.execute(sa.text("SHOW server_version")).scalar_one()
            sync = conn.execute(sa.text("SHOW synchronous_commit")).scalar_one()
            fsync = conn.execute(sa.text("SHOW fsync")).scalar_one()
    finally:
        engine.dispose()
    with redis_server.client() as c:
        rv = c.info("server")["redis_version"]
    return (f"PostgreSQL {pg} (synchronous_commit={sync}, fsync={fsync}; shared, on loopback), "
            f"redis-server {rv} (private, AOF everysec, noeviction)")


# --- report ---------------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), {platform.machine()}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def versions() -> str:
    out = []
    for name in VERSIONS:
        try:
            out.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name} -")
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (one connection each)")
    ap.add_argument("--batch", type=int, default=1, help="events per request (1 sends a single object)")
    ap.add_argument("--seconds", type=float, default=20, help="measured window")
    ap.add_argument("--warmup", type=float, default=5, help="seconds of load before the window")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--postgres", default=DEFAULT_POSTGRES,
                    help="admin URL of the Postgres server; a throwaway database is created beside it")
    ap.add_argument("--redis-server", default="redis-server", help="the redis-server binary to start")
    ap.add_argument("--ready-timeout", type=float, default=60, help="seconds for the API to become ready")
    ap.add_argument("--profile", type=Path, default=None,
                    help="run the API under cProfile (bench.profiled, every thread; --workers 1) and "
                         "write its pstats here when it stops")
    ap.add_argument("--before", action="store_true",
                    help="the ingest path as it was before issue 13's producer work (bench.api_before: no "
                         "group commit, durable marks, executemany outbox rows, send_task); --workers 1")
    ap.add_argument("--compare-key-cache", action="store_true",
                    help="measure with the API's verified-key cache off (TAGGER_API_KEY_CACHE_TTL_S=0) and "
                         "on (its default TTL), alternating, --rounds times each, in this one run; the last "
                         "line gives on/off as a ratio")
    ap.add_argument("--events-per-message", type=int, default=None,
                    help="the API's TAGGER_EVENTS_PER_MESSAGE (default: the environment's, else 50)")
    ap.add_argument("--rounds", type=int, default=2, help="with --compare-key-cache: runs of each")
    args = ap.parse_args()
    if args.compare_key_cache and (args.before or args.profile or args.rounds < 1):
        ap.error("--compare-key-cache takes neither --before nor --profile, and --rounds >= 1")
    if (args.profile or args.before) and args.workers != 1:
        ap.error("--profile and --before need --workers 1")
    if min(args.clients, args.batch, args.workers) < 1 or args.seconds <= 0 or args.warmup < 0:
        ap.error("--clients, --batch and --workers must be >= 1, --seconds > 0, --warmup >= 0")
    from api.config import ApiSettings

    max_batch = ApiSettings().max_batch  # what the server will read from the same environment
    if args.batch > max_batch:
        ap.error(f"--batch {args.batch} is over the API's limit of {max_batch} (TAGGER_API_MAX_BATCH)")

    products = sample_products()
    if not args.compare_key_cache:
        rate, p50, p99 = run_once(args, products, {})
        print(f"events_per_s={rate:.0f} p50_ms={p50:.1f} p99_ms={p99:.1f}")
        return
    # Alternating off/on, each a fresh API, database and Redis: slow drift of the machine's other load
    # (2 shared cores here) hits both sides alike; the ratio of the medians is the number to quote.
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for n in range(args.rounds):
        for side in ("off", "on"):
            print(f"--- round {n + 1}/{args.rounds}: key cache {side} ---")
            env = {"TAGGER_API_KEY_CACHE_TTL_S": "0"} if side == "off" else {}
            rates[side].append(run_once(args, products, env)[0])
    import numpy as np

    off, on = (float(np.median(rates[k])) for k in ("off", "on"))
    print(f"key cache off: {', '.join(f'{r:.0f}' for r in rates['off'])} events/s; on: "
          f"{', '.join(f'{r:.0f}' for r in rates['on'])} events/s (medians {off:.0f} and {on:.0f})")
    print(f"key_cache_ratio={on / off:.2f} off_events_per_s={off:.0f} on_events_per_s={on:.0f}")


def run_once(args: argparse.Namespace, products: list[dict[str, Any]],
             extra_env: dict[str, str]) -> tuple[float, float, float]:
    """One measurement with its own database, Redis and API (``extra_env`` added to the API's
    environment); prints the report and checks that nothing
    accepted was lost. Returns (events/s, p50 ms, p99 ms)."""
    import numpy as np
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="tagger-bench-ingest-") as tmp:
        folder = Path(tmp)
        redis_server = RedisServer(folder, args.redis_server)
        db_url: str | None = None
        api: ApiServer | None = None
        try:
            db_url = recreate_database(bench_database_url(args.postgres))
            token = producer_token(db_url)
            env = {**os.environ, "TAGGER_DATABASE_URL": db_url, "TAGGER_BROKER_URL": redis_server.url,
                   "TAGGER_TAGGING_QUEUE": QUEUE}
            if args.events_per_message is not None:
                env["TAGGER_EVENTS_PER_MESSAGE"] = str(args.events_per_message)
            if args.compare_key_cache and "TAGGER_API_KEY_CACHE_TTL_S" not in extra_env:
                env.pop("TAGGER_API_KEY_CACHE_TTL_S", None)  # "on": the setting's default, not the shell's
            env.update(extra_env)
            api = ApiServer(env, args.workers, folder / "api.log",
                            args.profile.resolve() if args.profile else None, args.before)
            api.wait_ready(args.ready_timeout)
            facts = server_facts(db_url, redis_server)

            snaps: list[CpuSnapshot] = []
            postmaster = postmaster_pid(db_url)
            counters: list[tuple[int, int]] = []
            api_pids = api.pids()
            with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                          TextColumn("{task.fields[accepted]:>9,} accepted"), console=err) as bar:
                task = bar.add_task("warm-up", total=args.warmup + args.seconds, accepted=0)

                def on_edge(edge: int) -> None:
                    snaps.append(CpuSnapshot.take(api_pids, postmaster, redis_server.proc.pid))
                    if edge == 0:
                        counters.append(database_counters(db_url))
                    bar.update(task, description="measuring" if edge == 0 else "finishing")

                def progress(elapsed: float, accepted: int) -> None:
                    bar.update(task, completed=elapsed, accepted=accepted)

                load, w0, w1 = asyncio.run(drive(args, api.base, token, products, on_edge, progress))
            time.sleep(1.0)  # Postgres flushes its statistics about once a second
            counters.append(database_counters(db_url))
            api.check_alive()

            recorded = recorded_ids(db_url)
            on_queue, messages = queued_ids(redis_server)
        except BaseException:
            if api is not None:
                err.print(f"[red]API log tail:[/]\n{api.tail()}")
            raise
        finally:
            if api is not None:
                api.stop()
            redis_server.stop()
            if db_url is not None:
                drop_database(db_url)

    # --- the numbers ---
    window = [r for r in load.requests if w0 <= r.done <= w1]
    ok = [r for r in window if r.status == 202]
    failed = [r for r in load.requests if r.status != 202 or r.error]
    accepted = sum(r.accepted for r in ok)
    lat = np.array([(r.done - r.sent) * 1000 for r in ok]) if ok else np.array([float("nan")])
    p50, p90, p99 = (float(np.percentile(lat, q)) for q in (50, 90, 99))
    rate = accepted / args.seconds
    a, b = snaps[0], snaps[-1]
    wall_cpu = b.total - a.total  # CPU-seconds available on the machine during the window

    def share(x: float) -> str:
        return f"{max(0.0, 100 * x / wall_cpu * (os.cpu_count() or 1)):.0f}%"  # /proc ticks: ~1% slop

    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"services: {facts}")
    print(f"settings: clients {args.clients} (asyncio + httpx, keep-alive), batch {args.batch} events per "
          f"request, warm-up {args.warmup:g}s, measured {args.seconds:g}s, uvicorn workers {args.workers} "
          f"(--no-access-log, log level warning), events from {len(products)} sample products")
    print(f"requests in window: {len(ok)} answered 202 ({len(ok) / args.seconds:.1f}/s), "
          f"{len(window) - len(ok)} other; latency ms p50 {p50:.1f}, p90 {p90:.1f}, p99 {p99:.1f}, "
          f"max {float(np.max(lat)):.1f}")
    ours = (b.api - a.api) + (b.postgres - a.postgres) + (b.redis - a.redis) + (b.bench - a.bench)
    print(f"CPU in window (100% = one core): API {share(b.api - a.api)}, Postgres (all of it) "
          f"{share(b.postgres - a.postgres)}, redis-server {share(b.redis - a.redis)}, this load generator "
          f"{share(b.bench - a.bench)}; the rest of the machine (kernel, "
          f"other processes) {share((b.busy - a.busy) - ours)} "
          f"(of {100 * (os.cpu_count() or 1)}%); API CPU per accepted event "
          f"{1000 * (b.api - a.api) / max(1, accepted):.2f} ms")
    if args.workers > 1:  # keep-alive connections are spread once, at accept(): the split can be uneven
        print("API CPU per process (the uvicorn supervisor and its resource tracker first): "
              + ", ".join(share(y - x) for x, y in zip(a.api_each, b.api_each, strict=True)))
    sessions, commits = (counters[-1][i] - counters[0][i] for i in (0, 1))
    print(f"Postgres in window: {sessions} connections opened, {commits} commits "
          f"({commits / max(1, len(ok)):.1f} per request; these counters include the check's own few)")
    if failed:
        print(f"FAILED REQUESTS: {len(failed)}; by status {dict(Counter(r.status for r in failed))}; first: "
              f"{failed[0].error!r}")

    # --- nothing accepted may be lost ---
    accepted_ids = set(load.accepted_ids)
    not_queued = set(load.not_queued_ids)
    missing_rows = accepted_ids - recorded.keys()
    missing_msgs = (accepted_ids - not_queued) - on_queue.keys()
    twice = sum(1 for n in on_queue.values() if n > 1)
    print(f"check: {len(accepted_ids):,} events accepted over the whole run (warm-up and tail included); "
          f"{len(accepted_ids & recorded.keys()):,} in tagging_events, "
          f"{len(accepted_ids & on_queue.keys()):,} on the Redis queue ({sum(on_queue.values()):,} events in "
          f"{messages:,} messages, {twice} duplicated), {len(not_queued):,} answered queued=false "
          f"(the sweeper's job); lost: {len(missing_rows)} rows, {len(missing_msgs)} messages")
    if missing_rows or missing_msgs or len(load.accepted_ids) != len(accepted_ids):
        raise SystemExit(f"LOST EVENTS: {len(missing_rows)} accepted ids have no tagging_events row "
                         f"(e.g. {sorted(missing_rows)[:3]}), {len(missing_msgs)} queued ids are not on the "
                         f"queue (e.g. {sorted(missing_msgs)[:3]})")
    if failed:
        raise SystemExit(f"{len(failed)} requests failed (see above)")
    return rate, p50, p99


if __name__ == "__main__":
    main()
