"""The task contract: names are what producers send and workers register; queues come from settings."""

from __future__ import annotations

from shared.config import Settings
from shared.tasks import CHECK_NEW_LABELS, RETRAIN, SWEEP_INGESTED, TAG_PRODUCT, TASKS, task_routes


def test_names_are_the_wire_contract() -> None:
    """Messages already on a queue carry these names: renaming one strands them."""
    assert [t.name for t in TASKS] == ["tagger.tag_product", "tagger.retrain", "tagger.check_new_labels",
                                       "tagger.sweep_ingested"]


def test_queues_follow_the_settings() -> None:
    s = Settings(tagging_queue="tq", training_queue="rq")
    assert TAG_PRODUCT.queue_name(s) == "tq"
    assert {RETRAIN.queue_name(s), CHECK_NEW_LABELS.queue_name(s), SWEEP_INGESTED.queue_name(s)} == {"rq"}
    assert task_routes(s) == {t.name: {"queue": t.queue_name(s)} for t in TASKS}


def test_only_the_batch_task_is_acked_late() -> None:
    """Tagging is idempotent, so a killed worker's batch comes back; a retrain must never run twice."""
    assert [t.name for t in TASKS if t.acks_late] == [TAG_PRODUCT.name]
    assert all(t.options["ignore_result"] for t in TASKS)
