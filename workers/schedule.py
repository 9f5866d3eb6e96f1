"""The whole beat schedule in one place (run exactly one beat: duplicates would double-fire)."""

from __future__ import annotations

from shared.config import Settings


def beat_schedule(s: Settings) -> dict:
    return {
        "retrain-periodically": {"task": "tagger.retrain", "schedule": float(s.retrain_interval_s),
                                 "kwargs": {"reason": "schedule"}, "options": {"queue": s.training_queue}},
        "retrain-when-labels-arrive": {"task": "tagger.check_new_labels", "schedule": 60.0,
                                       "options": {"queue": s.training_queue, "expires": 60.0}},
        # Events the API accepted but could not hand to the broker (or the broker lost) go out
        # again: nothing accepted is ever lost. Checks expire after one period: while no worker
        # consumes, they do not pile up (the next one does the same work).
        "sweep-ingested-events": {"task": "tagger.sweep_ingested", "schedule": 30.0,
                                  "options": {"queue": s.training_queue, "expires": 30.0}},
    }
