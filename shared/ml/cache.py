"""On-disk embedding cache keyed by (encoder id, content hash): a second training run re-encodes
nothing, and retraining encodes only products it has not seen."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


class EmbeddingCache:
    """A SQLite file of float32 vectors; safe across threads and processes (WAL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS emb (encoder TEXT NOT NULL, key TEXT NOT NULL, "
            "vec BLOB NOT NULL, PRIMARY KEY (encoder, key))"
        )
        self._db.commit()

    def get_many(self, encoder: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        uniq = list(dict.fromkeys(keys))
        with self._lock:
            for i in range(0, len(uniq), 900):  # SQLite's bound-parameter limit
                part = uniq[i : i + 900]
                q = f"SELECT key, vec FROM emb WHERE encoder=? AND key IN ({','.join('?' * len(part))})"
                for key, blob in self._db.execute(q, [encoder, *part]):
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, encoder: str, items: dict[str, np.ndarray]) -> None:
        rows = [(encoder, k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)", rows)
            self._db.commit()

    def count(self, encoder: str) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM emb WHERE encoder=?", [encoder]).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def cached_encode(
    cache: EmbeddingCache | None,
    encoder_id: str,
    keys: Sequence[str],
    encode: Callable[[list[int]], np.ndarray],
    dim: int,
    chunk: int = 512,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Rows for ``keys``: cached ones read back, the rest encoded by ``encode(indices)`` in chunks
    and stored. Duplicated keys are encoded once."""
    out = np.zeros((len(keys), dim), dtype=np.float32)
    hits = cache.get_many(encoder_id, keys) if cache else {}
    first: dict[str, int] = {}
    todo: list[int] = []
    for i, k in enumerate(keys):
        if k in hits:
            out[i] = hits[k]
        elif k not in first:
            first[k] = i
            todo.append(i)
    if progress:
        progress(len(keys) - len(todo))
    for s in range(0, len(todo), chunk):
        idx = todo[s : s + chunk]
        vecs = encode(idx)
        for i, v in zip(idx, vecs, strict=True):
            out[i] = v
        if cache:
            cache.put_many(encoder_id, {keys[i]: out[i] for i in idx})
        if progress:
            progress(len(idx))
    for i, k in enumerate(keys):  # fill duplicates of keys encoded above
        if k not in hits and first[k] != i:
            out[i] = out[first[k]]
    return out
