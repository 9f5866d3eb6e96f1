"""Prometheus metrics for the API and the workers, defined in one place (no torch import).

Every helper swallows its own errors: a metrics problem must never fail a request or a batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

log = logging.getLogger("tagger.metrics")

# What workers.tagging.process_batch times: image fetch, photo decode+resize, both encoders,
# fusion head+calibration+ranking, the one-transaction write; "infer" is fetch..head together.
STAGES = ("fetch", "decode", "encode", "head", "write", "infer")

events_accepted_total = Counter("tagger_events_accepted_total", "Events accepted by POST /v1/events.")
events_rejected_total = Counter("tagger_events_rejected_total", "Events rejected by POST /v1/events.")
queue_depth = Gauge("tagger_queue_depth", "Messages waiting on a broker queue (read from Redis when the "
                    "API's /metrics is scraped); a tagging message carries one event or an envelope of up "
                    "to TAGGER_EVENTS_PER_MESSAGE.", ["queue"])
broker_up = Gauge("tagger_broker_up", "1 when the last /metrics scrape read the queue depths from the "
                  "broker, 0 when it could not (then there is no tagger_queue_depth series).")
batch_size = Histogram("tagger_batch_size", "Deliveries per tagging batch.",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
stage_seconds = Histogram("tagger_stage_seconds", "Seconds spent per tagging stage.", ["stage"])
failures_total = Counter("tagger_failures_total", "Tagging failures by reason.", ["reason"])
for _reason in ("batch", "image", "refused"):  # at 0 from the start: rate() and the alerts see the first one
    failures_total.labels(reason=_reason)
event_outcomes_total = Counter(
    "tagger_event_outcomes_total", "Deliveries a tagging batch finished with, by outcome: succeeded, failed "
    "(dead-lettered; kind says why, e.g. malformed, refused), retried (re-enqueued with one more attempt) or "
    "handed_back (left to the broker, redelivered later); kind is empty for succeeded and handed_back.",
    ["outcome", "kind"])
axis_decisions_total = Counter(
    "tagger_axis_decisions_total", "Tagged items per axis by what the model decided: status auto (at least "
    "one value applied on the axis) or review (none applied: the axis waits for a reviewer).",
    ["axis", "status"])
live_model = Gauge("tagger_live_model", "1 for the model version this process serves.", ["version"])
# Registered by workers only (register_worker_health): any other process importing this module would
# export a constant 0 and fire the TaggerDatabaseDown/TaggerObjectStoreDown alerts.
worker_database_up = Gauge("tagger_worker_database_up", "1 while this worker's last database write or "
                           "probe succeeded, 0 while it waits for the database (no attempt is counted).",
                           registry=None)
worker_object_store_up = Gauge("tagger_worker_object_store_up", "1 while this worker's last s3:// photo "
                               "fetches reached the object store, 0 while it waits for it.", registry=None)


def register_worker_health() -> None:
    """Export the worker's dependency gauges from this process, starting at 1 (up until shown down)."""
    from prometheus_client import REGISTRY

    for gauge in (worker_database_up, worker_object_store_up):
        with contextlib.suppress(ValueError):  # already registered
            REGISTRY.register(gauge)
            gauge.set(1)
outage_waits_total = Counter("tagger_outage_waits_total", "Batches that waited for an unreachable "
                             "database instead of failing.")
estimated_accuracy = Gauge(
    "tagger_estimated_accuracy", "Accuracy of the served model estimated without labels from its calibrated "
    "top-1 scores (CBPE) over the worker's last TAGGER_ACCURACY_WINDOW items, per single-label axis.",
    ["axis"])
reference_accuracy = Gauge(
    "tagger_reference_accuracy", "Accuracy the served model measured on its held-out part at training time, "
    "per axis: what tagger_estimated_accuracy is compared with.", ["axis"])
accuracy_alert_margin = Gauge(
    "tagger_accuracy_alert_margin", "TAGGER_ACCURACY_ALERT_MARGIN: how far the estimate may fall under the "
    "reference before the TaggerAccuracyDrop alert fires (docker/prometheus/alerts.yml).")

http_request_seconds = Histogram(
    "tagger_http_request_seconds", "Seconds the API took to answer, by method, route template (never the "
    "raw path: ids would explode the series) and status class (2xx, 4xx, 5xx).",
    ["method", "route", "status"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))

# The live audit's switches (shared/audit.py), read from auto_switches by the API at each scrape.
AUDIT_LABELS = ["axis", "value"]
auto_enabled = Gauge(
    "tagger_auto_enabled", "1 while the model may auto-apply the value, 0 while the live audit has switched "
    "it off; only values reviewers have judged audit or paused tags of (others are enabled).", AUDIT_LABELS)
audit_precision_lower = Gauge(
    "tagger_audit_precision_lower", "One-sided 95% lower confidence bound of the value's live precision, "
    "from reviewers' decisions on its audit and paused tags.", AUDIT_LABELS)
audit_precision_upper = Gauge(
    "tagger_audit_precision_upper", "One-sided 95% upper confidence bound of the value's live precision; "
    "the value is switched off while this is under the target.", AUDIT_LABELS)
audit_decisions = Gauge(
    "tagger_audit_decisions", "Reviewers' decisions behind the value's live precision (the latest "
    "TAGGER_AUDIT_WINDOW at most).", AUDIT_LABELS)
_AUDIT_GAUGES = (auto_enabled, audit_precision_lower, audit_precision_upper, audit_decisions)


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


def count_outcomes(outcomes: Iterable[str]) -> None:
    """One batch's per-delivery outcomes, each ``"outcome"`` or ``"outcome:kind"``."""
    try:
        counts: dict[tuple[str, str], int] = {}
        for outcome in outcomes:
            state, _, kind = outcome.partition(":")
            counts[(state, kind)] = counts.get((state, kind), 0) + 1
        for (state, kind), n in counts.items():
            event_outcomes_total.labels(outcome=state, kind=kind).inc(n)
    except Exception:  # pragma: no cover
        log.debug("metrics_failed", exc_info=True)


def count_axis_decisions(items: Iterable[Iterable[Any]]) -> None:
    """Per tagged item (its model tags, objects with ``axis`` and ``status``): one decision per axis."""
    try:
        counts: dict[tuple[str, str], int] = {}
        for tags in items:
            axes: dict[str, bool] = {}
            for tag in tags:
                axes[tag.axis] = axes.get(tag.axis, False) or tag.status == "auto"
            for axis, auto in axes.items():
                key = (axis, "auto" if auto else "review")
                counts[key] = counts.get(key, 0) + 1
        for (axis, status), n in counts.items():
            axis_decisions_total.labels(axis=axis, status=status).inc(n)
    except Exception:  # pragma: no cover
        log.debug("metrics_failed", exc_info=True)


def set_live_model(version: str) -> None:
    """Only ``version`` is reported as live (1); the previous one's series is dropped."""
    try:
        live_model.clear()
        live_model.labels(version=version).set(1)
    except Exception:  # pragma: no cover
        log.debug("metrics_failed", exc_info=True)


def set_accuracy(estimates: dict[str, float], reference: dict[str, float] | None = None,
                 margin: float | None = None) -> None:
    """Publish the live estimates (and, on a model load or swap, the reference and the alert margin);
    axes without an estimate have no series, never a stale one."""
    try:
        if reference is not None:
            reference_accuracy.clear()
            for axis, value in reference.items():
                reference_accuracy.labels(axis=axis).set(value)
            estimated_accuracy.clear()
        if margin is not None:
            accuracy_alert_margin.set(margin)
        for axis, value in estimates.items():
            estimated_accuracy.labels(axis=axis).set(value)
    except Exception:  # pragma: no cover
        log.debug("metrics_failed", exc_info=True)


def set_queue_depth(queue: str, depth: int) -> None:
    try:
        queue_depth.labels(queue=queue).set(depth)
    except Exception:  # pragma: no cover
        log.debug("metrics_failed", exc_info=True)


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps for ``queue``: the plain one (priority 0, what Celery uses unless a
    task sets a priority) and one per priority step, named by the installed kombu's rule."""
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    return [queue] + [f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS if step]


def _redis_url(broker_url: str) -> str:
    scheme, _, rest = broker_url.partition("://")
    scheme = scheme.lower()
    if scheme in ("redis", "rediss"):
        return broker_url
    if scheme == "redis+socket":
        return f"unix://{rest}"
    raise ValueError(f"queue depth is read from Redis brokers only, not {scheme}://")


def read_queue_depths(broker_url: str, queues: Sequence[str], timeout_s: float) -> dict[str, int]:
    """Messages waiting per queue (LLEN of its lists, summed; delivered-but-unacked ones are not waiting),
    in one round trip. A fresh connection per call: scrapes are rare and nothing is left to close.
    No retries and ``timeout_s`` on connect and reply, so a dead broker costs at most ~2 x timeout_s."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(_redis_url(broker_url), socket_connect_timeout=timeout_s,
                                  socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in queues:
                for key in queue_keys(queue):
                    pipe.llen(key)
            sizes = iter(pipe.execute())
    finally:
        client.close()
    return {queue: sum(int(next(sizes)) for _ in queue_keys(queue)) for queue in queues}


def refresh_queue_depths(broker_url: str, queues: Sequence[str], timeout_s: float = 1.0) -> bool:
    """Set ``tagger_queue_depth`` from the broker now (the API calls it on each scrape: no poller, never
    stale). If the broker cannot be read, the queues' series are removed rather than set to a made-up
    number, ``tagger_broker_up`` is 0 and a warning is logged; never raises. True when read."""
    try:
        depths = read_queue_depths(broker_url, queues, timeout_s)
    except Exception as exc:
        from kombu.utils.url import maybe_sanitize_url

        log.warning("queue_depth_unavailable broker=%s error=%s: %s",
                    maybe_sanitize_url(broker_url), type(exc).__name__, exc)
        for queue in queues:
            with contextlib.suppress(KeyError):
                queue_depth.remove(queue)
        broker_up.set(0)
        return False
    for queue, depth in depths.items():
        set_queue_depth(queue, depth)
    broker_up.set(1)
    return True


def set_audit_switches(rows: Iterable[tuple[str, str, bool, float, float, int]] | None) -> None:
    """Replace the audit series with ``rows`` of (axis, value, enabled, lower, upper, n); None (the
    table could not be read) leaves no series rather than stale ones. Never raises."""
    try:
        for gauge in _AUDIT_GAUGES:
            gauge.clear()
        for axis, value, enabled, lower, upper, n in rows or ():
            auto_enabled.labels(axis=axis, value=value).set(1 if enabled else 0)
            audit_precision_lower.labels(axis=axis, value=value).set(lower)
            audit_precision_upper.labels(axis=axis, value=value).set(upper)
            audit_decisions.labels(axis=axis, value=value).set(n)
    except Exception:  # pragma: no cover
        log.debug("metrics_failed", exc_info=True)


class RequestTimer:
    """ASGI middleware timing every HTTP request into ``tagger_http_request_seconds``:
    ``app.add_middleware(RequestTimer)``. The route is the matched template (Starlette puts it in the
    scope while routing), ``unmatched`` for a 404 on no route; the body is not touched."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        import time

        t0, status = time.perf_counter(), [500]

        async def watch(message: dict) -> None:
            if message.get("type") == "http.response.start":
                status[0] = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            try:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                http_request_seconds.labels(method=scope.get("method", ""), route=route,
                                            status=f"{status[0] // 100}xx").observe(time.perf_counter() - t0)
            except Exception:  # pragma: no cover
                log.debug("metrics_failed", exc_info=True)


_server_started = False


def _silent_handler() -> type:
    from wsgiref.simple_server import WSGIRequestHandler

    class Silent(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
            """Scrapes and probes every few seconds would drown the worker's log."""

    return Silent


def worker_app(readiness: Callable[[], tuple[bool, dict[str, object]]]) -> Callable:
    """WSGI app of a worker's port: ``/readyz`` (200 ready, 503 not, JSON body saying why), the rest
    is prometheus_client's exposition (``/metrics``)."""
    metrics_app = make_wsgi_app()

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/readyz":
            ok, detail = readiness()
            body = json.dumps({"ready": ok, **detail}).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return metrics_app(environ, start_response)

    return app


def start_worker_server(port: int | None, host: str = "127.0.0.1",
                        readiness: Callable[[], tuple[bool, dict[str, object]]] | None = None) -> int | None:
    """Serve this process's ``/metrics`` and ``/readyz`` on ``host:port`` (``TAGGER_METRICS_HOST``,
    ``TAGGER_METRICS_PORT``) if a port is set; the port, or None. Loopback by default: it has no auth."""
    global _server_started
    if not port or _server_started:
        return None
    try:
        from wsgiref.simple_server import make_server

        from prometheus_client.exposition import ThreadingWSGIServer

        server = make_server(host, port, worker_app(readiness or (lambda: (True, {}))),
                             ThreadingWSGIServer, handler_class=_silent_handler())
        threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    except Exception as exc:  # a taken port (prefork children) must not stop the worker
        log.warning("metrics_server_not_started host=%s port=%s error=%s", host, port, exc)
        return None
    _server_started = True
    log.info("metrics_server_started host=%s port=%d", host, port)
    return port
