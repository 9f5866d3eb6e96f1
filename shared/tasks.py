"""Every Celery task's contract, declared once: its name, its queue and its delivery options.

Producers (:mod:`shared.publish`, the API, the demo) send by name and never import ``workers/``;
the workers' task decorators, ``task_routes`` and the beat schedule are all derived from these
declarations, so a task cannot be renamed, or moved to another queue, in one place only. A name
is the wire contract: messages already queued under it must still find their task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from shared.config import Settings

Queue = Literal["tagging", "training"]


@dataclass(frozen=True)
class TaskSpec:
    """One task. ``queue`` names which of the configured queues it runs on (their names are settings)."""

    name: str
    queue: Queue
    # True: acked after the work (a killed worker's message comes back). False: acked on receipt,
    # for long or periodic work that must never run twice because a worker died mid-run.
    acks_late: bool

    def queue_name(self, settings: Settings) -> str:
        """The queue this task is routed to under ``settings``."""
        return settings.tagging_queue if self.queue == "tagging" else settings.training_queue

    @property
    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``@app.task``: one preset, so no decorator retypes (or mistypes) them."""
        return {"name": self.name, "acks_late": self.acks_late, "ignore_result": True}


TAG_PRODUCT = TaskSpec("tagger.tag_product", "tagging", acks_late=True)
RETRAIN = TaskSpec("tagger.retrain", "training", acks_late=False)
CHECK_NEW_LABELS = TaskSpec("tagger.check_new_labels", "training", acks_late=False)
SWEEP_INGESTED = TaskSpec("tagger.sweep_ingested", "training", acks_late=False)
TASKS: tuple[TaskSpec, ...] = (TAG_PRODUCT, RETRAIN, CHECK_NEW_LABELS, SWEEP_INGESTED)


def task_routes(settings: Settings) -> dict[str, dict[str, str]]:
    """Celery's ``task_routes``: every task to its queue."""
    return {task.name: {"queue": task.queue_name(settings)} for task in TASKS}
