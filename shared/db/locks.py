"""One-at-a-time guards that survive across processes: a Postgres advisory lock, or a file lock
for the embedded SQLite database."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from shared.db.session import get_engine


@contextlib.contextmanager
def try_lock(url: str, key: int, lock_dir: Path) -> Iterator[bool]:
    """Yields True while this process holds the lock named ``key``, False if someone else does.

    Postgres: ``pg_try_advisory_lock`` on a connection held for the whole block, so the lock
    goes away with the process if it dies. SQLite: ``flock`` on a file beside the cache."""
    engine = get_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            got = bool(conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"lock-{key}").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
