"""What the worker tests share besides fixtures: the stack under test, events, images, waits."""

from __future__ import annotations

import io
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.publish import Publisher
from tests.servers import S3Front
from tests.workers.db import Db
from tests.workers.procs import RedisServer, Worker, wait_for

BUCKET = "tagger-images"


@dataclass
class Images:
    """Sample product photos as files, and the sample records they belong to."""

    folder: Path
    records: list[Any]
    data: dict[str, bytes]  # record id -> JPEG bytes

    def file_uri(self, record_id: str) -> str:
        path = self.folder / f"{record_id}.jpg"
        if not path.exists():
            path.write_bytes(self.data[record_id])
        return path.as_uri()

    def write(self, name: str, data: bytes) -> str:
        (self.folder / name).write_bytes(data)
        return (self.folder / name).as_uri()


def png(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, format="PNG")
    return out.getvalue()


@dataclass
class S3:
    client: Any
    front: S3Front  # the endpoint the workers use: records requests, hangs ``/hang/`` keys

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=BUCKET, Key=key, Body=data)
        return f"s3://{BUCKET}/{key}"


# What a worker needs to talk to moto: any credentials, one region.
S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Stack:
    """A worker with its own Redis and database, and a publisher for it."""

    redis: RedisServer
    db: Db
    worker: Worker
    publisher: Publisher

    def publish(self, *events: dict) -> None:
        self.publisher.publish(list(events))


def event(product_id: str | None = None, title: str = "Puma Men Black Running Shoes", **fields: Any) -> dict:
    """A valid product.uploaded v1 event with fresh ids unless given."""
    return {
        "event_id": fields.pop("event_id", None) or f"ev-{uuid.uuid4().hex[:12]}",
        "product_id": product_id or f"p-{uuid.uuid4().hex[:10]}",
        "seller_id": "seller-1",
        "title": title,
        "occurred_at": fields.pop("occurred_at", None) or datetime.now(UTC).isoformat(),
        **fields,
    }


def processed(stack: Stack) -> int:
    """Deliveries the worker has finished with (the ``n`` of its batch_tagged lines)."""
    return sum(int(n) for n in re.findall(r"batch_tagged n=(\d+)", stack.worker.log()))


def wait_processed(stack: Stack, at_least: int, timeout: float = 60) -> None:
    """Wait until the worker has finished ``at_least`` deliveries and Redis holds none."""
    wait_for(lambda: processed(stack) >= at_least and stack.redis.backlog() == (0, 0), timeout,
             f"{at_least} deliveries processed and acked")
