"""The tagging batch, in stages: decode requests -> fetch images -> infer (no DB connection
held) -> write every effect in one transaction -> return (celery-batches then acks).

A request is one message, and a message may carry an envelope of events (:mod:`shared.tasks`):
the batch flattens its requests into events (:func:`workers.deliveries.decode`), runs the model on
them in pieces of at most ``batch_size`` events (a flush may hold a few more: it runs once
``batch_size`` EVENTS are buffered, and an envelope is never split), writes them all in one
transaction, and reports an outcome per event (Prometheus counts events; Flower, a task per message).

On a GPU the inference is cut into sub-batches (:mod:`workers.stages`): fetch + decode of the next
on a stage thread while the model runs this one; the batch stays one write and one ack.

A bad item fails alone: a malformed message is dead-lettered, a broken image leaves the text to
tag the product. A failure of the whole batch (database down) hands every delivery on itself
(:mod:`workers.deliveries`): celery-batches acks the batch even when the task raises, so nothing
may rely on the broker to redeliver it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from shared import audit
from shared.config import Settings, get_settings
from shared.db.faults import describe
from shared.db.tags import TaggingResult, product_content_hash
from shared.events import ProductUploaded
from shared.fetch import FetchError, ImageFetcher
from shared.metrics import count_axis_decisions, count_failure, observe_batch, set_accuracy
from shared.ml.live_accuracy import RollingAccuracy
from shared.stopwatch import Stopwatch
from workers.audit import SwitchWatcher
from workers.batching import OUTCOMES, UNACKED
from workers.deliveries import Delivery, decode, requeue_or_dead_letter
from workers.hotswap import ModelWatcher, announce, warm_up
from workers.readiness import mark_model_loaded, mark_object_store, readiness, wait_for_database
from workers.stages import default_sub_batch, overlapped, split
from workers.writes import OutageTimeout, write

log = logging.getLogger("workers.tagging")


@dataclass
class Runtime:
    """What a worker process loads once: settings, the model, the image fetcher."""

    settings: Settings
    tagger: Any  # shared.ml.predictor.Tagger (imported lazily: torch is heavy)
    fetcher: ImageFetcher
    watcher: Any = None  # workers.hotswap.ModelWatcher: follows the registry's live version
    accuracy: RollingAccuracy = field(default_factory=RollingAccuracy)  # the label-free live estimate
    switches: SwitchWatcher | None = None  # the live audit: values switched off (shared/audit.py)
    # Events per sub-batch whose fetch + decode overlaps the model's previous one; 0: the batch in
    # one piece (the CPU default; workers.stages.default_sub_batch).
    sub_batch: int = 0
    stage_pool: ThreadPoolExecutor | None = None  # the stage thread(s); made when sub_batch > 0


_runtime: Runtime | None = None
_lock = threading.Lock()


def load_runtime(settings: Settings | None = None) -> Runtime:
    """Load the model once per process (after any fork) and warm it up on full batches."""
    global _runtime
    with _lock:
        if _runtime is None:
            from shared.ml.device import set_cpu_threads
            from shared.ml.predictor import Tagger

            s = settings or get_settings()
            t0 = time.perf_counter()
            threads = set_cpu_threads(s.torch_threads)
            tagger = Tagger.load(settings=s)
            warm_up(tagger, s.batch_size)
            rt = Runtime(settings=s, tagger=tagger, fetcher=ImageFetcher(s),
                         accuracy=RollingAccuracy(s.accuracy_window),
                         switches=SwitchWatcher(s.database_url, s.audit_poll_s))
            rt.watcher = ModelWatcher(rt)
            auto = default_sub_batch(tagger.device, s.batch_size)
            use_stages(rt, s.sub_batch if s.sub_batch >= 0 else auto)
            rt.watcher.sync_now()  # the registry's live model, if one is registered
            tagger = rt.tagger
            _runtime = rt
            announce(rt)
            mark_model_loaded()
            log.info("model_loaded version=%s device=%s torch_threads=%d ms=%d", tagger.version,
                     tagger.device, threads, (time.perf_counter() - t0) * 1000)
        return _runtime


def use_stages(rt: Runtime, sub_batch: int) -> None:
    """Overlap fetch + decode with the model in sub-batches of ``sub_batch`` events (0: off)."""
    rt.sub_batch = sub_batch
    if sub_batch > 0 and rt.stage_pool is None:
        # Two threads: a CPU worker may run two batches at once, each with its next sub-batch in flight.
        rt.stage_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stage")


def runtime(settings: Settings | None = None) -> Runtime:
    """This process's runtime, loaded with ``settings`` if it is not loaded yet."""
    return _runtime or load_runtime(settings)


def content_hash(ev: ProductUploaded) -> str:
    return product_content_hash(ev.title, ev.description, ev.image_uri)

def infer(
    rt: Runtime, events: list[ProductUploaded], tagger: Any, watch: Stopwatch | None = None
) -> list[tuple[Any, str | None]]:
    """Predictions and per-item image error; holds no database connection. ``watch`` gets the
    seconds of fetch, decode, encode and head."""
    watch = watch or Stopwatch()
    parts = split(len(events), rt.sub_batch)
    if len(parts) > 1 and rt.stage_pool is not None and hasattr(tagger, "image_encoder"):
        return _infer_staged(rt, events, tagger, watch, parts)
    uris = [ev.image_uri for ev in events]
    with watch.stage("fetch"):
        fetched = rt.fetcher.fetch_many(uris)
    down = store_down(uris, fetched)
    if down is not None:  # our store, not the events: no tagging without their photos
        raise ObjectStoreUnavailable(str(down))
    items, fetch_errors = _items(events, fetched)
    preds = tagger.predict(items, top_k=3, watch=watch)
    return _paired(preds, items, fetch_errors)


def _items(events: list[ProductUploaded], fetched: list[Any]) -> tuple[list[Any], list[str | None]]:
    """What the model reads per event (title + description, the photo if it arrived), and per event
    why its photo did not arrive."""
    from shared.ml.predictor import Item

    items, fetch_errors = [], []
    for ev, got in zip(events, fetched, strict=True):
        text = ev.title if not ev.description else f"{ev.title} {ev.description}"
        if isinstance(got, FetchError):
            items.append(Item(text=text, image=None))
            fetch_errors.append(str(got))
        else:
            items.append(Item(text=text, image=got))
            fetch_errors.append(None)
    return items, fetch_errors


def _paired(preds: list[Any], items: list[Any],
            fetch_errors: list[str | None]) -> list[tuple[Any, str | None]]:
    """Each prediction with the item's image error: the fetch's, else the decode's."""
    if len(preds) != len(items):  # LitServe's check: outputs must match inputs one to one
        raise RuntimeError(f"model returned {len(preds)} predictions for {len(items)} items")
    return [(p, fe or p.image_error) for p, fe in zip(preds, fetch_errors, strict=True)]


def _infer_staged(rt: Runtime, events: list[ProductUploaded], tagger: Any, watch: Stopwatch,
                  parts: list[slice]) -> list[tuple[Any, str | None]]:
    """:func:`infer` in sub-batches, fetch + decode of the next on the stage thread. The object
    store is judged on the whole batch, as in one piece: before the model runs the last sub-batch,
    every photo has been fetched; if the store is down the earlier sub-batches' predictions are
    thrown away (nothing was written) and the batch waits as before."""
    uris = [ev.image_uri for ev in events]

    def prepare(part: slice) -> tuple[list[Any], list[Any], list[str | None], Any]:
        with watch.stage("fetch"):  # only this thread times fetch and decode: no shared key
            fetched = rt.fetcher.fetch_many(uris[part])
        items, fetch_errors = _items(events[part], fetched)
        photos = None
        if any(it.image is not None for it in items):
            with watch.stage("decode"):
                photos = tagger.image_encoder.prepare_batch([it.image for it in items])
        return fetched, items, fetch_errors, photos

    fetched_all: list[Any] = []
    preds: list[Any] = []
    items_all: list[Any] = []
    errors_all: list[str | None] = []
    with closing(overlapped(parts, prepare, rt.stage_pool)) as staged:
        for k, (fetched, items, fetch_errors, photos) in enumerate(staged):
            fetched_all += fetched
            if k == len(parts) - 1:
                down = store_down(uris, fetched_all)
                if down is not None:
                    raise ObjectStoreUnavailable(str(down))
            preds += tagger.predict(items, top_k=3, watch=watch, images=photos)
            items_all += items
            errors_all += fetch_errors
    return _paired(preds, items_all, errors_all)


def store_down(uris: list[str | None], fetched: list[Any]) -> FetchError | None:
    """The error that shows the object store down, if the batch shows it: some s3:// fetch failed as
    unavailable and none succeeded. When others from the store arrived, the store is up and the
    failing object is that event's problem (tagged without its photo), so one bad object can never
    hold the queue."""
    failed = [f for f in fetched if isinstance(f, FetchError) and f.unavailable]
    arrived = any(isinstance(f, bytes) and (u or "").startswith("s3://")
                  for u, f in zip(uris, fetched, strict=True))
    return failed[0] if failed and not arrived else None


class ObjectStoreUnavailable(Exception):
    """The object store holding the photos could not be reached: wait for it, count no attempt."""


def _infer_waiting(rt: Runtime, events: list[ProductUploaded], tagger: Any,
                   watch: Stopwatch) -> list[tuple[Any, str | None]] | None:
    """:func:`infer`, waiting out an object-store outage with back-off (not ready meanwhile);
    None when it lasts longer than ``outage_max_wait_s`` (the batch then goes back to the broker)."""
    s = rt.settings
    deadline, pause = time.monotonic() + s.outage_max_wait_s, 0.5
    outcomes: list[tuple[Any, str | None]] = []
    while True:
        try:
            # The model never sees more than batch_size events at once, however many a flush holds.
            while len(outcomes) < len(events):
                outcomes += infer(rt, events[len(outcomes):len(outcomes) + s.batch_size], tagger, watch)
            mark_object_store(True)
            return outcomes
        except ObjectStoreUnavailable as exc:
            mark_object_store(False)
            log.warning("fetch_waits_for_object_store n=%d error=%s", len(events), exc)
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, s.outage_backoff_max_s)


def _held_back(pred: Any, axis: str) -> str | None:
    """Why the model held an axis's tags back beyond their scores: the product is out of its domain,
    its title and photo alone named different values on some axis, or the axis's applied value contradicted
    another applied tag (both axes go to review)."""
    if pred.abstain_reason:
        return "out_of_domain"
    if pred.disagreements:  # title and photo disagreed: nothing about the item is applied
        return "disagreement"
    if axis in pred.one_input:  # e.g. its photo failed, and the title alone is not sure enough here
        return "one_input"
    return "contradiction" if axis in pred.contradictions else None


def _result(d: Delivery, pred: Any, image_error: str | None, version: str,
            off: frozenset[audit.Pair] = frozenset(), audit_rate: float = 0.0) -> TaggingResult:
    ev = d.event
    assert ev is not None
    common = dict(
        event_id=ev.event_id, product_id=ev.product_id, seller_id=ev.seller_id, title=ev.title,
        description=ev.description, image_uri=ev.image_uri, locale=ev.locale,
        occurred_at=ev.occurred_at, content_hash=content_hash(ev), model_version=version,
        image_error=image_error, attempts=d.attempt, novelty=pred.novelty, novelty_reason=pred.abstain_reason,
    )
    tags = [(axis, t.value, t.score, t.status, _held_back(pred, axis), pred.evidence.get(axis) or None)
            for axis, ranked in pred.tags.items() for t in ranked]
    tags = audit.apply(tags, ev.event_id, off, audit_rate)  # switched-off values paused; a sample audited
    try:
        return TaggingResult(**common, tags=tags, status="failed" if pred.error else "tagged",
                             error=pred.error)
    except ValueError as exc:  # e.g. a non-finite score: this item fails, not its batch
        return TaggingResult(**common, status="failed", error=str(exc)[:2000])


def _observe_accuracy(rt: Runtime, preds: list[Any]) -> None:
    """Feed the label-free accuracy estimate with the batch's top-1 scores (single-label axes)."""
    single = [a.name for a in rt.tagger.axes if a.kind == "single"]
    rt.accuracy.add({axis: [p.tags[axis][0].score for p in preds if p.tags.get(axis)] for axis in single})
    set_accuracy(rt.accuracy.estimates())


def _outcomes(deliveries: list[Delivery], kind: str, max_attempts: int,
              unhanded: list[str] | tuple[str, ...] = ()) -> list[tuple[Delivery, str]]:
    """Each event's outcome (:data:`OUTCOMES`): a reason KIND, never data. Mirrors
    :func:`workers.deliveries.requeue_or_dead_letter`: malformed or out of attempts -> dead-lettered
    ("failed"), else re-enqueued ("retried"); the events of unhanded requests are left to the broker."""
    out = []
    for d in deliveries:
        if d.req.id in unhanded:
            continue
        if d.reason is not None:
            out.append((d, "failed:" + ("malformed" if d.event is None else "attempts_exhausted")))
        else:
            out.append((d, ("failed:" if d.attempt >= max_attempts else "retried:") + kind))
    return out


def per_request(*outcomes: list[tuple[Delivery, str]]) -> dict[str, list[str]]:
    """Events' outcomes as :data:`OUTCOMES` reports them: ``{request id: [outcome of each event]}``.
    A later list overrides an earlier one for the same event (a refused write after its inference)."""
    final: dict[int, tuple[Delivery, str]] = {}
    for pairs in outcomes:
        for d, outcome in pairs:
            final[id(d)] = (d, outcome)
    out: dict[str, list[str]] = {}
    for d, outcome in final.values():
        out.setdefault(d.req.id, []).append(outcome)
    return out


def process_batch(requests: list, rt: Runtime, app: Any) -> dict:
    """Tag one batch; returns a small report (also logged as one line). Never raises.

    While the database is unreachable the batch waits for it, unacked, and the worker is not ready
    (:mod:`workers.writes`): an outage counts no attempt and dead-letters nothing. A write the database
    refuses is narrowed down to the events that cause it. A failed inference re-enqueues or
    dead-letters the batch event by event (attempts counted). What could be handed on neither way is
    listed under ``UNACKED`` so it is not acked."""
    t0 = time.perf_counter()
    s = rt.settings
    every = [r.id for r in requests]
    if not readiness()[1]["database_up"] and not wait_for_database(
            s.database_url, s.outage_backoff_max_s, s.outage_max_wait_s):
        # Still down: no inference for nothing; the broker keeps the batch, the next one waits again.
        log.warning("batch_handed_back messages=%d reason=database_unreachable", len(requests))
        return {"messages": len(requests), "handed_back": len(requests), UNACKED: every}
    if rt.watcher is not None:
        rt.watcher.poll()  # cheap: at most one short query every few seconds
    off = rt.switches.poll() if rt.switches is not None else frozenset()  # likewise
    tagger = rt.tagger  # one model for the whole batch, even if a swap lands meanwhile
    deliveries = [d for req in requests for d in decode(req, s.max_attempts)]  # envelopes flattened
    n = len(deliveries)
    todo = [d for d in deliveries if d.reason is None]
    given_up = [d for d in deliveries if d.reason is not None]
    watch = Stopwatch()
    try:
        outcomes = _infer_waiting(rt, [d.event for d in todo], tagger, watch) if todo else []
        if outcomes is None:  # the object store stayed down: the broker keeps the batch, as it was
            log.warning("batch_handed_back n=%d messages=%d reason=object_store_unreachable", n,
                        len(requests))
            return {"n": n, "messages": len(requests), "handed_back": len(requests), UNACKED: every}
        version = tagger.version
        results = [_result(d, p, ie, version, off, s.audit_rate)
                   for d, (p, ie) in zip(todo, outcomes, strict=True)]
    except Exception as exc:  # the model failed on the batch: hand on each delivery, attempts counted
        log.exception("batch_failed stage=infer n=%d messages=%d error=%s", n, len(requests),
                      type(exc).__name__)
        unhanded = requeue_or_dead_letter(app, s, deliveries, f"infer: {type(exc).__name__}")
        count_failure("batch", n)
        return {"n": n, "messages": len(requests), "failed": n, "error": f"infer: {type(exc).__name__}",
                UNACKED: unhanded,
                OUTCOMES: per_request(_outcomes(deliveries, "infer_error", s.max_attempts, unhanded))}
    t_infer = time.perf_counter()
    try:
        with watch.stage("write"):
            report = write(s, list(zip(todo, results, strict=True)), given_up)
    except OutageTimeout as exc:
        log.warning("batch_handed_back n=%d messages=%d reason=database_unreachable error=%s", n,
                    len(requests), exc)
        return {"n": n, "messages": len(requests), "handed_back": len(requests), UNACKED: every}
    except Exception as exc:  # not narrowed down (e.g. the dead letters themselves): attempts counted
        reason = describe(exc)
        log.error("batch_failed stage=write n=%d messages=%d error=%s", n, len(requests), reason)
        unhanded = requeue_or_dead_letter(app, s, deliveries, reason)
        count_failure("batch", n)
        return {"n": n, "messages": len(requests), "failed": n, "error": reason, UNACKED: unhanded,
                OUTCOMES: per_request(_outcomes(deliveries, "write_error", s.max_attempts, unhanded))}
    unhanded = []
    for d, reason in report.failed:  # a write that failed alone for no known reason: one more attempt
        unhanded += requeue_or_dead_letter(app, s, [d], reason)
    done = time.perf_counter()
    if tagger is rt.tagger:  # after a swap mid-batch these scores are the old model's: not counted
        _observe_accuracy(rt, [p for p, _ in outcomes])
    image_errors = sum(1 for r in results if r.image_error)
    observe_batch(n, {**watch.seconds, "infer": t_infer - t0})
    count_failure("image", image_errors)
    count_failure("refused", len(report.refused))
    not_written = {id(d) for d, _ in report.refused + report.failed}
    count_axis_decisions(r.tags for d, r in zip(todo, results, strict=True)
                         if r.status == "tagged" and id(d) not in not_written)
    ms = watch.ms()
    dead = len(given_up) + len(report.refused)
    log.info("batch_tagged n=%d dead_lettered=%d image_errors=%d model=%s infer_ms=%d write_ms=%d "
             "fetch_ms=%d decode_ms=%d encode_ms=%d head_ms=%d waited_s=%.1f messages=%d",
             n, dead, image_errors, version, (t_infer - t0) * 1000,
             (done - t_infer) * 1000, *(ms.get(k, 0) for k in ("fetch", "decode", "encode", "head")),
             report.waited_s, len(requests))
    return {"n": n, "messages": len(requests),
            "tagged": len(results) - len(report.refused) - len(report.failed),
            "dead_lettered": dead, "image_errors": image_errors, "refused": len(report.refused),
            "waited_s": round(report.waited_s, 1), UNACKED: unhanded,
            OUTCOMES: per_request(
                [(d, "succeeded" if r.status == "tagged" else "failed:tagging_failed")
                 for d, r in zip(todo, results, strict=True)],
                _outcomes(given_up, "", s.max_attempts),
                [(d, "failed:refused") for d, _ in report.refused],
                _outcomes([d for d, _ in report.failed], "write_error", s.max_attempts, unhanded))}
