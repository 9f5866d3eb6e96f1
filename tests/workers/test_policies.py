"""Worker policies as pure functions: when a flush tick runs a partial batch (only once its oldest
request waited half the interval, so a tick landing mid-refill does not split a full batch, and
no request waits a whole interval), and the default batches-at-once / torch-threads layout."""

from __future__ import annotations

import pytest

from workers.batching import flush_due

EVERY, INTERVAL = 32, 0.25


@pytest.mark.parametrize(("buffered", "age", "due"), [
    (0, None, True),       # empty: upstream cancels the timer
    (32, 0.0, True),       # full: at once
    (40, 0.0, True),
    (2, 0.01, False),      # a refill in progress: wait for the rest
    (2, 0.124, False),
    (2, 0.125, True),      # half an interval old: run what there is
    (1, 0.2, True),
])
def test_flush_due(buffered: int, age: float | None, due: bool) -> None:
    first_at = None if age is None else 100.0 - age
    assert flush_due(buffered, EVERY, first_at, 100.0, INTERVAL) is due


def test_pending_eta_requests_always_flush() -> None:
    assert flush_due(2, EVERY, 99.99, 100.0, INTERVAL, pending=True)


def test_longest_wait_stays_under_the_interval() -> None:
    """Ticks every interval/2 from the first request: whenever a request arrives between ticks,
    the first tick that runs it comes less than one interval later."""
    tick = INTERVAL / 2
    for k in range(1, 50):
        arrival = tick * k / 50  # between the ticks at 0 and `tick`
        runs_at = next(t * tick for t in range(1, 10) if flush_due(1, EVERY, arrival, t * tick, INTERVAL))
        assert runs_at - arrival < INTERVAL


@pytest.mark.parametrize(("device", "asked", "cores", "layout"), [
    ("cpu", (0, 0), 2, (2, 1)),     # the measured CPU layout
    ("cpu", (0, 0), 16, (2, 8)),
    ("cpu", (0, 0), 1, (1, 1)),
    ("cpu", (3, 0), 12, (3, 4)),
    ("cpu", (2, 2), 2, (2, 2)),     # what the operator sets wins
    ("cuda", (0, 0), 16, (2, 0)),   # a GPU: one batch writes while the other infers; torch's own threads
    ("cuda", (1, 0), 16, (1, 0)),
])
def test_worker_layout(device: str, asked: tuple[int, int], cores: int, layout: tuple[int, int]) -> None:
    from shared.ml.device import worker_layout

    assert worker_layout(device, *asked, cores=cores) == layout
