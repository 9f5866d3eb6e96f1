"""Prometheus metrics for the API and the workers, defined in one place (no torch import).

Every helper swallows its own errors: a metrics problem must never fail a request or a batch.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("tagger.metrics")

STAGES = ("infer", "write")  # what workers.tagging.process_batch times today

events_accepted_total = Counter("tagger_events_accepted_total", "Events accepted by POST /v1/events.")
events_rejected_total = Counter("tagger_events_rejected_total", "Events rejected by POST /v1/events.")
queue_depth = Gauge("tagger_queue_depth", "Messages waiting on a broker queue.", ["queue"])
batch_size = Histogram("tagger_batch_size", "Deliveries per tagging batch.",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
stage_seconds = Histogram("tagger_stage_seconds", "Seconds spent per tagging stage.", ["stage"])
failures_total = Counter("tagger_failures_total", "Tagging failures by reason.", ["reason"])
live_model = Gauge("tagger_live_model", "1 for the model version this process serves.", ["version"])


def count_ingest(accepted: int, rejected: int) -> None:
    try:
        if accepted:
            events_accepted_total.inc(accepted)
        if rejected:
            events_rejected_total.inc(rejected)
    except Exception:  # pragma: no cover - metrics never break ingest
        log.debug("metrics_failed", exc_info=True)


def observe_batch(n: int, timings: dict[str, float]) -> None:
    """One batch: its size and the seconds of each stage (keys from ``STAGES``)."""
    try:
        batch_size.observe(n)
        for stage, seconds in timings.items():
            stage_seconds.labels(stage=stage).observe(seconds)
    except Exception:  # pragma: no cover
        log.debug("metrics_failed", exc_info=True)


def count_failure(reason: str, n: int = 1) -> None:
    try:
        if n:
            failures_total.labels(reason=reason).inc(n)
    except Exception:  # pragma: no cover
        log.debug("metrics_failed", exc_info=True)


def set_live_model(version: str) -> None:
    """Only ``version`` is reported as live (1); the previous one's series is dropped."""
    try:
        live_model.clear()
        live_model.labels(version=version).set(1)
    except Exception:  # pragma: no cover
        log.debug("metrics_failed", exc_info=True)


def set_queue_depth(queue: str, depth: int) -> None:
    try:
        queue_depth.labels(queue=queue).set(depth)
    except Exception:  # pragma: no cover
        log.debug("metrics_failed", exc_info=True)


_server_started = False


def start_worker_server(raw: str | None) -> int | None:
    """Serve this process's metrics on port ``raw`` (``TAGGER_METRICS_PORT``) if set; the port, or None."""
    global _server_started
    raw = (raw or "").strip()
    if not raw or _server_started:
        return None
    try:
        port = int(raw)
        start_http_server(port)
    except Exception as exc:  # a bad value or a taken port (prefork children) must not stop the worker
        log.warning("metrics_server_not_started port=%s error=%s", raw, exc)
        return None
    _server_started = True
    log.info("metrics_server_started port=%d", port)
    return port
