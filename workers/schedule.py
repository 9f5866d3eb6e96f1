"""The whole beat schedule in one place (run exactly one beat: duplicates would double-fire).

Task names and queues come from :mod:`shared.tasks`; only the periods are decided here.
"""

from __future__ import annotations

from typing import Any

from shared.config import Settings
from shared.tasks import CHECK_NEW_LABELS, RETRAIN, SWEEP_INGESTED, TaskSpec

LABEL_CHECK_EVERY_S = 60.0
SWEEP_EVERY_S = 30.0


def _entry(task: TaskSpec, every_s: float, s: Settings, *, expires: bool, **kwargs: Any) -> dict[str, Any]:
    """A beat entry. ``expires``: a check not picked up within one period is dropped, so while no
    worker consumes, checks do not pile up (the next one does the same work)."""
    options: dict[str, Any] = {"queue": task.queue_name(s)}
    if expires:
        options["expires"] = every_s
    entry: dict[str, Any] = {"task": task.name, "schedule": every_s, "options": options}
    if kwargs:
        entry["kwargs"] = kwargs
    return entry


def beat_schedule(s: Settings) -> dict[str, dict[str, Any]]:
    return {
        "retrain-periodically": _entry(RETRAIN, float(s.retrain_interval_s), s, expires=False,
                                       reason="schedule"),
        "retrain-when-labels-arrive": _entry(CHECK_NEW_LABELS, LABEL_CHECK_EVERY_S, s, expires=True),
        # Events the API accepted but could not hand to the broker (or the broker lost) go out
        # again: nothing accepted is ever lost.
        "sweep-ingested-events": _entry(SWEEP_INGESTED, SWEEP_EVERY_S, s, expires=True),
    }
