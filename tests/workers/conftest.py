"""Worker test fixtures: private Redis servers, fresh Postgres databases, S3 on moto, real workers.

Every process started here is stopped in a finalizer. Set ``TAGGER_TEST_MODEL_DIR`` to reuse an
already trained model instead of training the sample one (a minute) in each session.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.pool import NullPool

from shared.db.migrate import upgrade
from shared.publish import Publisher
from tests.api.conftest import (  # noqa: F401  (the sweeper's tests start at the API's door)
    api_db_url,
    app_settings,
    broker,
    db_url,
    dead_broker_client,
    tokens,
)
from tests.servers import S3Front
from tests.shared.db.conftest import make_database  # noqa: F401  (for the API's database fixture)
from tests.workers.db import Db
from tests.workers.procs import RedisServer, Worker, free_port
from tests.workers.stack import BUCKET, S3, S3_ENV, Images, Stack

ADMIN_URL = os.environ.get("TAGGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
_workers: list[Worker] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """On a failure, attach the tail of every worker log of the session to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call"):
        for w in _workers:
            rep.sections.append((f"worker {w.name} log (tail)", w.tail(60)))


@pytest.fixture(scope="session")
def model_dir(request: pytest.FixtureRequest) -> Path:
    given = os.environ.get("TAGGER_TEST_MODEL_DIR")
    return Path(given) if given else request.getfixturevalue("sample_model")


@pytest.fixture(scope="session")
def tag_count(model_dir: Path) -> int:
    """Model tag rows one prediction writes: the top 3 values (or fewer) of every axis."""
    axes = json.loads((model_dir / "manifest.json").read_text())["axes"]
    return sum(min(3, len(axis["values"])) for axis in axes.values())


@pytest.fixture(scope="session")
def admin_engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def make_db(admin_engine: sa.Engine) -> Iterator[Callable[..., str]]:
    """Factory: a new database (migrated unless ``migrate=False``); all are dropped at the end."""
    created: list[str] = []

    def make(migrate: bool = True) -> str:
        name = f"tagger_wtest_{uuid.uuid4().hex[:10]}"
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        url = admin_engine.url.set(database=name).render_as_string(hide_password=False)
        if migrate:
            upgrade(url)
        return url

    yield make
    from shared.db.session import dispose_engines

    dispose_engines()
    with admin_engine.connect() as conn:
        for name in created:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def make_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def make(persistent: bool = False) -> RedisServer:
        servers.append(RedisServer(tmp_path_factory.mktemp("redis"), persistent=persistent))
        return servers[-1]

    yield make
    for server in servers:
        server.kill()


@pytest.fixture(scope="session")
def worker_env(model_dir: Path, settings: Any) -> Callable[..., dict[str, str]]:
    """Factory: the environment of a worker on ``redis`` and ``database_url``, plus ``TAGGER_`` overrides."""

    def env(redis: RedisServer, database_url: str, **overrides: object) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TAGGER_", "AWS_"))}
        base.update(
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
            TAGGER_BROKER_URL=redis.url, TAGGER_DATABASE_URL=database_url, TAGGER_MODEL_DIR=str(model_dir),
            TAGGER_CACHE_DIR=str(settings.cache_dir), TAGGER_DEVICE="cpu", TAGGER_BATCH_SIZE="8",
            TAGGER_FLUSH_INTERVAL_S="0.2",
        )
        base.update({f"TAGGER_{k.upper()}": str(v) for k, v in overrides.items()})
        return base

    return env


@pytest.fixture(scope="session")
def start_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Worker]]:
    folder = tmp_path_factory.mktemp("workers")

    def start(name: str, env: dict[str, str], concurrency: int = 1) -> Worker:
        w = Worker(name, env, folder, concurrency)
        _workers.append(w)
        return w.start()

    yield start
    for w in _workers:
        w.stop()


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory, sample_manifest: Path) -> Images:
    from shared.ml.dataset import load_manifest, load_records, read_images

    manifest = load_manifest(sample_manifest)
    records = [r for r in load_records(manifest) if r.image_ref]
    raw = read_images(manifest, [r.image_ref for r in records])
    return Images(tmp_path_factory.mktemp("images"), records,
                  {r.id: raw[r.image_ref] for r in records if r.image_ref in raw})


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket=BUCKET)
    front = S3Front(port)
    yield S3(client, front)
    front.close()
    server.stop()


@pytest.fixture(scope="session")
def main_stack(make_redis: Callable, make_db: Callable, worker_env: Callable, start_worker: Callable,
               s3: S3) -> Iterator[Stack]:
    """The worker most tests share: production-like policy (private addresses refused), file://
    on, one allowed bucket behind the recording S3 front, small image limits, 1.5 s fetch timeout."""
    redis, url = make_redis(), make_db()
    env = worker_env(
        redis, url, allow_file_uris="true", image_hosts='["localhost"]', image_buckets=f'["{BUCKET}"]',
        s3_endpoint_url=s3.front.url, fetch_timeout_s=1.5, max_image_bytes=100_000,
        max_image_pixels=1_000_000, metrics_port=free_port(),
    )
    env.update(S3_ENV)
    worker = start_worker("main", env)
    db = Db(url)
    with Publisher(redis.url) as publisher:
        yield Stack(redis, db, worker, publisher)
    db.close()


@pytest.fixture
def raw_app(main_stack: Stack) -> Iterator[Celery]:
    """A bare Celery client of the main stack's broker: sends what the validating Publisher would
    refuse to (malformed events, hand-built envelopes)."""
    app = Celery("raw-producer", broker=main_stack.redis.url, set_as_current=False)
    app.conf.update(task_serializer="json", broker_connection_retry_on_startup=False)
    yield app
    app.close()
