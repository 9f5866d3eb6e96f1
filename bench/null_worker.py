"""The real tagging worker with a model that costs nothing: the plumbing's own ceiling.

BENCHMARK ONLY. Nothing in shared/, workers/, api/ or cli/ imports this module, and it is never
shipped as a model: it exists so ``bench/pipeline.py --null-model`` can measure what the queue,
celery-batches, the message decode, the audit, the set-based writes and the acks cost per event
when inference is free (the GPU case: the model is no longer the bottleneck).

It replaces :meth:`shared.ml.predictor.Tagger.load` (what ``workers.tagging.load_runtime`` calls)
with :meth:`NullTagger.load`, then runs the normal ``celery`` main with the arguments it was given,
so the worker is the same Celery app, the same batching and the same writes::

    python -m bench.null_worker -A workers.app worker -Q tagging -P threads -c 1 ...

:class:`NullTagger` reads the shipped model's manifest (version, axes, thresholds, the
disagreement table) and returns predictions of the real shape: top-3 values per axis with a score
and auto/review status from the axis's own thresholds, per-axis evidence (input shares; title-only
items have no single-input opinions), ``one_input`` from the manifest's ``alone`` table, a novelty
score, no disagreements. Scores are a cheap hash of the title, so values vary across products.

``TAGGER_BENCH_PROFILE=path``: the worker runs under cProfile (:mod:`bench.profiled`: one profiler
per thread, so the pool threads' batches are in it, merged) and writes pstats to ``path`` when it stops.

``TAGGER_BENCH_NO_TASK_EVENTS=1``: an experiment for the consumer side (issue 13, point 3), not a
setting: the worker sends no task events (``worker_send_task_events=False``; production sends them
for Flower and the outcome metrics).

``TAGGER_BENCH_REUSE_REDIS_CLIENT=1``: an experiment, not a setting: kombu's Redis channel builds a
new redis-py client (its ~170 response callbacks copied into a ``CaseInsensitiveDict``) for every
``QoS.append`` pipeline, every ack and every event publish; here each channel reuses one client
(:func:`reuse_redis_client`), to measure what that costs the consumer.

``TAGGER_BENCH_NULL_MODEL_MS=X``: a GPU stand-in: each ``predict`` call waits X ms per item (a sleep:
no CPU, the GIL released, as a thread blocked on a CUDA synchronise is; one batch at a time, as on
one device), so the run shows whether
the worker keeps such a model busy while it fetches, writes and acks (``bench.pipeline --model-ms``).

``TAGGER_BENCH_SWITCH_INTERVAL=S``: an experiment: ``sys.setswitchinterval(S)`` in the worker (Python's
default is 0.005 s: a thread that returns from a socket read while a pool thread runs Python code
may wait that long for the GIL, and the consumer makes several round trips per message).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from shared.config import Settings, get_settings
from shared.ml.artifact import load_artifact
from shared.ml.evidence import alone_axes
from shared.ml.labels import Axis
from shared.ml.predictor import AUTO, REVIEW, Item, Prediction, Tagger, TagScore

_DEVICE = threading.Lock()  # the GPU stand-in's one device (TAGGER_BENCH_NULL_MODEL_MS)


class NullTagger:
    """Predictions of the shipped model's shape at (almost) zero cost. Never a real model."""

    device = "cpu"

    def __init__(self, manifest: dict, version: str) -> None:
        self._wait_ms = float(os.environ.get("TAGGER_BENCH_NULL_MODEL_MS") or 0)  # the GPU stand-in
        self.manifest = manifest
        self.version = f"{version}+null"
        self.axes = [Axis.from_json(n, d) for n, d in manifest["axes"].items()]
        alone = alone_axes(manifest.get("disagreement"))
        self._title_alone = None if alone is None else alone["title"]
        # Per axis: its values and their thresholds, looked up once.
        self._tables = [(a.name, a.values, [a.threshold(v) for v in a.values]) for a in self.axes]

    @classmethod
    def load(cls, model_dir: str | Path | None = None, settings: Settings | None = None,
             cache: Any = None) -> NullTagger:
        s = settings or get_settings()
        artifact = load_artifact(model_dir or s.model_dir)
        return cls(artifact.manifest, artifact.version)

    def predict(self, items: list[Item], top_k: int = 3, watch: Any = None) -> list[Prediction]:
        if self._wait_ms > 0:
            with _DEVICE:  # one device: batches of other threads wait for it, as on one GPU
                time.sleep(self._wait_ms * len(items) / 1000)
        return [self._one(it, top_k) for it in items]

    def _one(self, item: Item, top_k: int) -> Prediction:
        text = item.text or ""
        if not text and item.image is None:
            return Prediction(error="no usable input: the title is empty and there is no image")
        h = zlib.crc32(text.encode())
        mods = ("text",) if item.image is None else ("text", "image")
        p = Prediction(modalities=mods, novelty=round((h % 1000) / 2000, 4))
        title_only = item.image is None
        for name, values, thr in self._tables:
            n = len(values)
            first = h % n
            scores = (0.9 + (h % 97) / 1000, 0.05, 0.02)
            ranked = []
            for r in range(min(top_k, n)):
                j = (first + r) % n
                ranked.append(TagScore(values[j], scores[r], AUTO if scores[r] >= thr[j] else REVIEW))
            held = title_only and self._title_alone is not None and name not in self._title_alone
            if held:
                p.one_input.append(name)
                for t in ranked:
                    t.status = REVIEW
            p.tags[name] = ranked
            share = 1.0 if title_only else 0.5
            p.evidence[name] = {"shares": {"title": share, "photo": round(1 - share, 4)}}
        return p


def install() -> None:
    """Make every ``Tagger.load`` in this process return a :class:`NullTagger`."""
    Tagger.load = classmethod(lambda cls, *a, **k: NullTagger.load(*a, **k))  # type: ignore[method-assign]


def reuse_redis_client() -> None:
    """Every ``conn_or_acquire()`` of a kombu Redis channel returns one client per channel (a redis-py
    client is thread-safe: each command or pipeline takes its own connection from the pool)."""
    from contextlib import contextmanager

    from kombu.transport import redis as kombu_redis

    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Any:
        if client:
            yield client
            return
        reused = self.__dict__.get("_bench_client")
        if reused is None:
            reused = self.__dict__["_bench_client"] = self._create_client()
        yield reused

    kombu_redis.Channel.conn_or_acquire = conn_or_acquire


def main() -> None:
    from celery.__main__ import main as celery_main

    install()
    if os.environ.get("TAGGER_BENCH_NO_TASK_EVENTS") == "1":
        from workers.app import app

        app.conf.worker_send_task_events = False
    if os.environ.get("TAGGER_BENCH_REUSE_REDIS_CLIENT") == "1":
        reuse_redis_client()
    if os.environ.get("TAGGER_BENCH_SWITCH_INTERVAL"):
        sys.setswitchinterval(float(os.environ["TAGGER_BENCH_SWITCH_INTERVAL"]))
    sys.argv = ["celery", *sys.argv[1:]]
    path = os.environ.get("TAGGER_BENCH_PROFILE")
    if path:
        from bench.profiled import profiled

        profiled(celery_main, path)
    else:
        celery_main()


if __name__ == "__main__":
    main()
