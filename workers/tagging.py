"""The tagging batch, in stages: decode requests -> fetch images -> infer (no DB connection
held) -> write every effect in one transaction -> return (celery-batches then acks).

A bad item fails alone: a malformed message is dead-lettered, a broken image leaves the text to
tag the product. A failure of the whole batch (database down) re-enqueues every event with its
attempt count, or dead-letters it after ``max_attempts``: celery-batches acks the batch even when
the task raises, so nothing may rely on the broker to redeliver it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.config import Settings, get_settings
from shared.db.session import session_scope
from shared.db.tags import TaggingResult, apply_batch, record_dead_letter
from shared.events import TAG_TASK, ProductUploaded, format_errors
from shared.fetch import FetchError, ImageFetcher

log = logging.getLogger("workers.tagging")


@dataclass
class Runtime:
    """What a worker process loads once: settings, the model, the image fetcher."""

    settings: Settings
    tagger: Any  # shared.ml.predictor.Tagger (imported lazily: torch is heavy)
    fetcher: ImageFetcher


_runtime: Runtime | None = None
_lock = threading.Lock()


def load_runtime(settings: Settings | None = None) -> Runtime:
    """Load the model once per process (after any fork) and warm it up on one item."""
    global _runtime
    with _lock:
        if _runtime is None:
            from shared.ml.predictor import Item, Tagger

            s = settings or get_settings()
            t0 = time.perf_counter()
            tagger = Tagger.load(settings=s)
            tagger.predict([Item(text="warm-up product title", image=None)])
            _runtime = Runtime(settings=s, tagger=tagger, fetcher=ImageFetcher(s))
            log.info("model_loaded version=%s device=%s ms=%d", tagger.version, tagger.device,
                     (time.perf_counter() - t0) * 1000)
        return _runtime


def runtime() -> Runtime:
    return _runtime or load_runtime()


def content_hash(ev: ProductUploaded) -> str:
    return hashlib.sha256(
        json.dumps([ev.title, ev.description, ev.image_uri]).encode()
    ).hexdigest()


def _decode(requests: list) -> tuple[list[tuple[Any, ProductUploaded, int]], list[tuple[Any, str, int]]]:
    good, bad = [], []
    for req in requests:
        kwargs = req.kwargs or {}
        attempt = int(kwargs.get("attempt", 1) or 1)
        raw = kwargs.get("event")
        try:
            good.append((req, ProductUploaded.model_validate(raw), attempt))
        except ValidationError as exc:
            bad.append((req, "; ".join(format_errors(exc)), attempt))
    return good, bad


def infer(rt: Runtime, events: list[ProductUploaded]) -> list[tuple[Any, str | None]]:
    """Predictions and per-item image error; holds no database connection."""
    from shared.ml.predictor import Item

    fetched = rt.fetcher.fetch_many([ev.image_uri for ev in events])
    items, fetch_errors = [], []
    for ev, got in zip(events, fetched, strict=True):
        text = ev.title if not ev.description else f"{ev.title} {ev.description}"
        if isinstance(got, FetchError):
            items.append(Item(text=text, image=None))
            fetch_errors.append(str(got))
        else:
            items.append(Item(text=text, image=got))
            fetch_errors.append(None)
    preds = rt.tagger.predict(items, top_k=3)
    if len(preds) != len(items):  # LitServe's check: outputs must match inputs one to one
        raise RuntimeError(f"model returned {len(preds)} predictions for {len(items)} items")
    return [(p, fe or p.image_error) for p, fe in zip(preds, fetch_errors, strict=True)]


def process_batch(requests: list, rt: Runtime, app: Any) -> dict:
    """Tag one batch; returns a small report (also logged as one line)."""
    t0 = time.perf_counter()
    good, bad = _decode(requests)
    events = [ev for _, ev, _ in good]
    try:
        outcomes = infer(rt, events) if events else []
        version = rt.tagger.version
        results = []
        for (_, ev, attempt), (pred, image_error) in zip(good, outcomes, strict=True):
            tags = [(axis, t.value, t.score, t.status) for axis, ranked in pred.tags.items()
                    for t in ranked]
            results.append(TaggingResult(
                event_id=ev.event_id, product_id=ev.product_id, seller_id=ev.seller_id,
                title=ev.title, description=ev.description, image_uri=ev.image_uri,
                locale=ev.locale, occurred_at=ev.occurred_at, content_hash=content_hash(ev),
                model_version=version, tags=tags,
                status="failed" if pred.error else "tagged", error=pred.error,
                image_error=image_error, attempts=attempt,
            ))
        t_infer = time.perf_counter()
        with session_scope(rt.settings.database_url) as session:
            apply_batch(session, results)
            for req, reason, attempt in bad:
                record_dead_letter(session, _event_id(req), _payload(req), reason, attempt)
    except Exception as exc:  # the whole batch failed: requeue or dead-letter each event
        requeue_or_dead_letter(app, rt.settings, good, exc)
        log.exception("batch_failed n=%d error=%s", len(requests), type(exc).__name__)
        return {"n": len(requests), "failed": len(requests), "error": str(exc)}
    done = time.perf_counter()
    image_errors = sum(1 for r in results if r.image_error)
    log.info("batch_tagged n=%d malformed=%d image_errors=%d model=%s infer_ms=%d write_ms=%d",
             len(requests), len(bad), image_errors, rt.tagger.version,
             (t_infer - t0) * 1000, (done - t_infer) * 1000)
    return {"n": len(requests), "tagged": len(results), "dead_lettered": len(bad),
            "image_errors": image_errors}


def _event_id(req: Any) -> str | None:
    ev = (req.kwargs or {}).get("event")
    return str(ev.get("event_id"))[:200] if isinstance(ev, dict) and ev.get("event_id") else None


def _payload(req: Any) -> str:
    try:
        return json.dumps({"args": list(req.args or ()), "kwargs": req.kwargs or {}}, default=str)
    except (TypeError, ValueError):
        return repr(req.kwargs)


def requeue_or_dead_letter(app: Any, s: Settings, good: list, exc: Exception) -> None:
    """Send each event back with attempt+1 (after a short back-off), or dead-letter it once it
    has had ``max_attempts``. If even the dead-letter write fails, requeue: never drop."""
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    for req, ev, attempt in good:
        if attempt >= s.max_attempts:
            try:
                with session_scope(s.database_url) as session:
                    record_dead_letter(session, ev.event_id, _payload(req), reason, attempt)
                continue
            except Exception:  # database still down: keep the event moving instead
                log.exception("dead_letter_failed event_id=%s", ev.event_id)
        app.send_task(
            TAG_TASK, kwargs={"event": ev.model_dump(mode="json"), "attempt": attempt + 1},
            queue=s.tagging_queue, countdown=min(2 ** attempt, 30),
        )
