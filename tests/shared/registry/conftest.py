"""Registry fixtures: copies of the shipped model under new versions, stores, S3 on moto (loopback)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.config import DEFAULT_MODEL_DIR
from shared.storage import LocalStore, S3Store

# The database fixtures of tests/shared/db: a fresh Postgres and SQLite database, per-test rollback.
from tests.shared.db.conftest import db_url, make_database, session  # noqa: F401

S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def make_model(tmp_path: Path) -> Callable[[str], Path]:
    """Factory: a copy of the shipped model whose manifest says ``version`` (no training needed)."""

    def make(version: str) -> Path:
        out = tmp_path / "models" / version
        if out.exists():
            return out
        shutil.copytree(DEFAULT_MODEL_DIR, out)
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["version"] = version
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return out

    return make


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


def overwrite(store: Any, key: str, data: bytes | None) -> None:
    """Change (or delete, with None) a stored object behind the store's back: storage corruption."""
    if isinstance(store, LocalStore):
        path = store.root / key
        path.chmod(0o644)
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
        return
    full = f"{store.prefix}/{key}" if store.prefix else key
    if data is None:
        store.client.delete_object(Bucket=store.bucket, Key=full)
    else:
        store.client.put_object(Bucket=store.bucket, Key=full, Body=data)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 and fake credentials in the environment for the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        for name, value in S3_ENV.items():
            mp.setenv(name, value)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket for one test."""
    import boto3

    name = f"models-{uuid.uuid4().hex[:12]}"
    boto3.session.Session().client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store(s3_endpoint: str, s3_bucket: str) -> S3Store:
    return S3Store(s3_bucket, "registry", endpoint_url=s3_endpoint)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> Any:
    """Each kind of store, for the tests whose claim must hold on both."""
    return request.getfixturevalue(f"{request.param}_store")
