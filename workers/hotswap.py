"""Follow the registry's live model without a restart.

Between batches the worker asks (at most every ``interval_s``) which version is live; a new one
is fetched, checksum-verified, loaded, warmed up and checked on a canned batch in a background
thread, then swapped in with one attribute assignment. Any failure keeps the old model serving,
is logged, and that version is not retried for a while.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from typing import Any

from shared.metrics import set_accuracy, set_live_model
from shared.ml.live_accuracy import reference_accuracy

log = logging.getLogger("workers.hotswap")
RETRY_FAILED_AFTER_S = 300.0


def announce(rt: Any) -> None:
    """The runtime's model now serves: say so on /metrics with what it measured at training time,
    and restart the live accuracy estimate (the old model's scores say nothing about the new one)."""
    set_live_model(rt.tagger.version)
    rt.accuracy.reset()
    set_accuracy({}, reference_accuracy(rt.tagger.manifest), rt.settings.accuracy_alert_margin)


def warmup_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (60, 80), (90, 120, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def warm_up(tagger: Any, batch_size: int) -> None:
    """Run full batches through both encoders and check the output: the first call of each pays
    kernel selection and allocator growth, and a model that cannot tag must not go live."""
    from shared.ml.predictor import Item

    photo = warmup_jpeg()
    items = [Item(text=f"warm-up product title {i}", image=photo) for i in range(batch_size)]
    for _ in range(2):
        preds = tagger.predict(items)
    names = {a.name for a in tagger.axes}
    for p in preds:
        if p.error or set(p.tags) != names or not all(p.tags.values()):
            raise RuntimeError(f"model {tagger.version} failed its warm-up check: {p.error or p.tags}")


def warm_threads(executor: Any, threads: int, tagger: Any, batch_size: int) -> list[Any]:
    """One full batch through the model on EACH of the pool's ``threads``, all at once.

    Why: the load-time warm-up runs in the main thread, but batches run in the pool's threads, and
    a thread's first forward pass pays its own allocator and kernel set-up (measured on the CPU:
    1.4-1.8x a warm batch). A barrier makes the executor start every thread now, not lazily.
    Returns the futures; the caller logs when they are done and never blocks the consumer on them.
    """
    from shared.ml.predictor import Item

    photo = warmup_jpeg()
    items = [Item(text=f"warm-up product title {i}", image=photo) for i in range(batch_size)]
    barrier = threading.Barrier(threads)

    def job() -> None:
        barrier.wait(timeout=120)
        tagger.predict(items)

    return [executor.submit(job) for _ in range(threads)]


class ModelWatcher:
    def __init__(self, rt: Any, interval_s: float = 5.0) -> None:
        self.rt = rt
        self.interval_s = interval_s
        self._last = 0.0
        self._loading: str | None = None
        self._failed: dict[str, float] = {}
        self._lock = threading.Lock()

    def live_version(self) -> str | None:
        """The version the registry says is live, from the worker's own database."""
        from shared.db.session import session_scope
        from shared.registry import live_version

        with session_scope(self.rt.settings.database_url) as session:
            row = live_version(session)
            return row.version if row is not None else None

    def poll(self) -> None:
        """Called before each batch; never raises, never blocks on a load."""
        now = time.monotonic()
        if now - self._last < self.interval_s or self._loading:
            return
        self._last = now
        try:
            version = self.live_version()
        except Exception as exc:  # the database may be down; the batch will say so
            log.warning("live_version_check_failed error=%s", type(exc).__name__)
            return
        if self._wanted(version):
            self._loading = version
            threading.Thread(target=self._load, args=(version,), name="model-swap", daemon=True).start()

    def sync_now(self) -> None:
        """At start-up: serve the live version from the first batch on, if there is one."""
        try:
            version = self.live_version()
        except Exception as exc:
            log.warning("live_version_check_failed error=%s", type(exc).__name__)
            return
        if self._wanted(version):
            self._load(version)

    def _wanted(self, version: str | None) -> bool:
        if version is None or version == self.rt.tagger.version:
            return False
        failed_at = self._failed.get(version)
        return failed_at is None or time.monotonic() - failed_at > RETRY_FAILED_AFTER_S

    def _load(self, version: str) -> None:
        from shared.ml.predictor import Tagger
        from shared.registry import fetch_artifact
        from shared.storage import open_store

        s = self.rt.settings
        t0 = time.perf_counter()
        try:
            store = open_store(s.object_store_url, s)
            model_dir = fetch_artifact(store, version, s.cache_dir / "models")
            tagger = Tagger.load(model_dir, settings=s)
            if tagger.version != version:
                raise RuntimeError(f"artifact says version {tagger.version}, registry says {version}")
            warm_up(tagger, s.batch_size)
            with self._lock:
                old, self.rt.tagger = self.rt.tagger.version, tagger
            announce(self.rt)
            log.info("model_swapped from=%s to=%s ms=%d", old, version, (time.perf_counter() - t0) * 1000)
        except Exception as exc:
            self._failed[version] = time.monotonic()
            log.error("model_swap_failed version=%s error=%s: %s kept=%s", version,
                      type(exc).__name__, str(exc)[:300], self.rt.tagger.version)
        finally:
            self._loading = None
