"""Seconds per named stage of one unit of work (a tagging batch), summed over repeats.

Why: ops want per-stage latency (fetch, decode, encode, head, write) without every function on
the path growing its own clock; the caller passes one Stopwatch down and reads it once at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """``with watch.stage("encode"): ...`` adds the block's wall time to ``seconds["encode"]``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def ms(self) -> dict[str, int]:
        """Whole milliseconds per stage, for log lines."""
        return {name: round(s * 1000) for name, s in self.seconds.items()}
