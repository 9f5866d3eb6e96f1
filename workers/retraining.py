"""The retraining loop, as plain functions the ``tagger.retrain`` task (and tests) call.

labels in the database -> records (images through the fetcher; embeddings from the cache) ->
train a challenger with the model core's trainer -> score challenger and live champion on the
frozen evaluation set -> register the challenger -> promote it only if the gate says so.
Only one retrain runs at a time (an advisory lock); a second trigger returns at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.config import Settings, get_settings
from shared.db.locks import try_lock
from shared.db.session import session_scope

log = logging.getLogger("workers.retraining")
RETRAIN_LOCK = 7_461_676_765_720_001  # any fixed bigint; names the retrain advisory lock
EVAL_SET_KEY = "eval/eval-set.json"


def frozen_eval_set(store: Any, product_ids: list[str], texts: dict[str, str],
                    settings: Settings) -> dict:
    """The gate's evaluation set: chosen once (grouped by normalised title, seeded) from the
    labelled products there are at that moment, written once to the object store with its
    fingerprint, and read back ever after. Its products never train."""
    from shared.ml.split import duplicate_groups, grouped_split
    from shared.storage import ObjectExistsError

    if store.exists(EVAL_SET_KEY):
        return json.loads(store.get(EVAL_SET_KEY))
    ids = sorted(product_ids)
    groups = duplicate_groups([texts[i] for i in ids], [None] * len(ids))
    parts = grouped_split(groups, {"rest": 1 - settings.eval_fraction, "eval": settings.eval_fraction},
                          seed=0)
    chosen = sorted(ids[i] for i in parts["eval"])
    body = {"product_ids": chosen, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "fingerprint": hashlib.sha256("\n".join(chosen).encode()).hexdigest()}
    try:
        store.put(EVAL_SET_KEY, json.dumps(body).encode())
    except ObjectExistsError:  # another process froze it first: theirs wins
        return json.loads(store.get(EVAL_SET_KEY))
    log.info("eval_set_frozen n=%d fingerprint=%s", len(chosen), body["fingerprint"][:12])
    return body


def _records(products: list[Any], fetcher: Any) -> tuple[list, list]:
    from shared.fetch import FetchError
    from shared.ml.dataset import Record

    records = [Record(id=p.product_id, text=p.text, image_ref=p.image_uri, labels=p.labels)
               for p in products]
    fetched = fetcher.fetch_many([p.image_uri for p in products])
    blobs = [None if isinstance(b, FetchError) else b for b in fetched]
    return records, blobs


def run_retrain(settings: Settings | None = None, reason: str = "schedule", cfg: Any = None) -> dict:
    """Train, gate, register and maybe promote; returns what happened (also logged)."""
    s = settings or get_settings()
    with try_lock(s.database_url, RETRAIN_LOCK, s.cache_dir) as got:
        if not got:
            log.info("retrain_skipped reason=locked trigger=%s", reason)
            return {"status": "skipped", "reason": "another retrain is running"}
        return _retrain_locked(s, reason, cfg)


def _retrain_locked(s: Settings, trigger: str, cfg: Any) -> dict:
    from shared.fetch import ImageFetcher
    from shared.labels.queries import label_watermark, labelled_products
    from shared.ml import gate
    from shared.ml.predictor import Tagger
    from shared.ml.report import evaluate_records
    from shared.ml.train_config import recorded_config
    from shared.ml.training import prepare_records, train_prepared
    from shared.registry import ensure_default_registered, fetch_artifact, live_version, promote, register
    from shared.storage import open_store

    t0 = time.perf_counter()
    store = open_store(s.object_store_url, s)
    with session_scope(s.database_url) as session:
        ensure_default_registered(session, store)
        champion = live_version(session)
        champion_version = champion.version if champion else None
        products = labelled_products(session)
        watermark = label_watermark(session)
    if not products:
        return {"status": "skipped", "reason": "no human labels yet"}
    eval_set = frozen_eval_set(store, [p.product_id for p in products],
                               {p.product_id: p.text for p in products}, s)
    records, blobs = _records(products, ImageFetcher(s))
    champ = Tagger.load(fetch_artifact(store, champion_version, s.cache_dir / "models"), settings=s)
    kinds = {a.name: a.kind for a in champ.axes}
    for r in records:
        for axis in r.labels:
            kinds.setdefault(axis, "single")  # a new axis learned from labels
    # The challenger trains as the champion was trained (its recorded recipe), not by the
    # library's defaults: a retrain must not silently change the design it is compared with.
    cfg = cfg or recorded_config(champ.manifest["training"].get("config") or {})
    data = prepare_records("labels", records, blobs, kinds, cfg, holdout=set(eval_set["product_ids"]))
    if len(data.parts["train"]) == 0:
        return {"status": "skipped", "reason": "every labelled product is in the evaluation set"}
    with tempfile.TemporaryDirectory(prefix="challenger-") as tmp:
        out = Path(tmp) / "model"
        manifest = train_prepared(data, out, s, cfg, show_progress=False)
        challenger = Tagger.load(out, settings=s)
        val = data.parts["validation"]
        eval_records, eval_blobs = [records[i] for i in val], [blobs[i] for i in val]
        champ_scores = evaluate_records(champ, "eval-set", eval_records, eval_blobs)["axes"]
        chall_scores = evaluate_records(challenger, "eval-set", eval_records, eval_blobs)["axes"]
        decision = gate.decide(
            champ_scores, chall_scores, s.gate_tolerance,
            {a.name: a.values for a in champ.axes}, {a.name: a.values for a in challenger.axes})
        with session_scope(s.database_url) as session:
            row = register(session, store, out, status="candidate", parent=champion_version,
                           label_watermark=watermark, reason=decision.reason)
            row.metrics = {**(row.metrics or {}), "gate": {
                "decision": asdict(decision), "champion": champ_scores, "challenger": chall_scores,
                "eval_set": eval_set["fingerprint"], "n_eval": len(val), "trigger": trigger}}
            if decision.promote:
                promote(session, store, row.version, reason=decision.reason)
            else:
                row.status = "rejected"
    result = {"status": "promoted" if decision.promote else "rejected", "version": manifest["version"],
              "champion": champion_version, "reason": decision.reason,
              "n_train": int(len(data.parts["train"])), "n_eval": int(len(val)),
              "seconds": round(time.perf_counter() - t0, 1)}
    log.info("retrain_done %s", " ".join(f"{k}={v}" for k, v in result.items()))
    return result


def new_labels_waiting(settings: Settings | None = None) -> int:
    """Human labels newer than the label watermark of the live model, or of a challenger trained
    on newer labels and rejected by the gate (the labels it saw did not make a better model:
    only labels after them are new), whichever is newer. Every label counts while neither has one."""
    import sqlalchemy as sa

    from shared.db.models import ModelVersion
    from shared.labels.queries import labels_since
    from shared.registry import live_version

    s = settings or get_settings()
    with session_scope(s.database_url) as session:
        live = live_version(session)
        rejected = session.scalar(sa.select(sa.func.max(ModelVersion.label_watermark))
                                  .where(ModelVersion.status == "rejected"))
        marks = [m for m in (live.label_watermark if live else None, rejected) if m is not None]
        return labels_since(session, max(marks) if marks else None)


def retrain_enqueuer(app: Any, s: Settings) -> Callable[[str], object]:
    """A callable that sends ``tagger.retrain(reason=...)`` to the training queue through ``app``."""

    def enqueue(reason: str) -> object:
        from shared.tasks import RETRAIN

        return app.send_task(RETRAIN.name, kwargs={"reason": reason}, queue=RETRAIN.queue_name(s))

    return enqueue


def trigger_on_new_labels(s: Settings, enqueue: Callable[[str], object]) -> int:
    """The ``tagger.check_new_labels`` decision: enqueue a retrain once at least
    ``retrain_min_new_labels`` labels are waiting; returns how many are."""
    waiting = new_labels_waiting(s)
    if waiting >= s.retrain_min_new_labels:
        enqueue(f"{waiting} new labels")
        log.info("retrain_enqueued waiting=%d threshold=%d", waiting, s.retrain_min_new_labels)
    return waiting
