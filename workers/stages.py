"""Inside one tagging batch: fetch + decode of sub-batch k+1 on a stage thread while the model runs
sub-batch k, so a GPU does not wait for photos to arrive and decode.

Why sub-batches inside the batch and not whole batches in flight: the batch stays the unit of the
write (one transaction) and of the ack, exactly as before (workers/tagging.py); only its inference
is cut up. On the CPU it is off by default (:func:`default_sub_batch`): the worker already runs two
batches at once there, and decode threads would only take cores from the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

P = TypeVar("P")
R = TypeVar("R")


def default_sub_batch(device: object, batch_size: int) -> int:
    """Events per sub-batch for a model on ``device``: 0 (no overlap) on the CPU; on CUDA a quarter
    of the batch, at least 16 (smaller forward passes waste the GPU)."""
    if getattr(device, "type", str(device)) != "cuda":
        return 0
    return max(16, -(-batch_size // 4))


def split(n: int, size: int) -> list[slice]:
    """``n`` items as consecutive slices of ``size`` (the last may be shorter); one slice when
    ``size`` is 0 or covers them all."""
    if size <= 0 or size >= n:
        return [slice(0, n)]
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def overlapped(parts: Sequence[P], prepare: Callable[[P], R], pool: ThreadPoolExecutor | None) -> Iterator[R]:
    """``prepare(part)`` for each part, in order; while the caller works on one result, the next
    part is prepared on ``pool``. Without a pool, or with one part, everything runs in the caller's
    thread. An exception from ``prepare`` is raised where its result would have been yielded.

    Close the iterator (``contextlib.closing``) when leaving early: it then waits for the part in
    flight, so no fetch of this batch runs after its caller returned."""
    if pool is None or len(parts) <= 1:
        for part in parts:
            yield prepare(part)
        return
    pending: Future[R] | None = pool.submit(prepare, parts[0])
    try:
        for k in range(len(parts)):
            result = pending.result()  # type: ignore[union-attr]  (set for every k but past the last)
            pending = pool.submit(prepare, parts[k + 1]) if k + 1 < len(parts) else None
            yield result
    finally:
        if pending is not None:
            pending.cancel()
            wait([pending])  # whatever it ends with (nobody reads it), it is over when we return
