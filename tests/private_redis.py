"""A redis-server of the test run's own, for suites that publish to a broker: sharing the
machine's Redis (one db number each) made two runs at once read each other's messages."""

from __future__ import annotations

import atexit
import contextlib
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import redis

from tests.workers.procs import RedisServer


@lru_cache(maxsize=1)
def private_redis_url() -> str:
    """One server per pytest process, started on first use, killed at exit."""
    server = RedisServer(Path(tempfile.mkdtemp(prefix="tagger-test-redis-")))
    atexit.register(server.kill)
    return server.url


@contextlib.contextmanager
def flushed(url: str) -> Iterator[redis.Redis]:
    """A client on an empty database, emptied again afterwards."""
    client = redis.Redis.from_url(url)
    client.ping()
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
