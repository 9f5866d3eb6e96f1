"""Stopwatch: stage seconds add up over repeats and are kept when the block raises."""

from __future__ import annotations

import time

import pytest

from shared.stopwatch import Stopwatch


def test_stages_accumulate_and_survive_errors() -> None:
    watch = Stopwatch()
    for _ in range(2):
        with watch.stage("encode"):
            time.sleep(0.01)
    with pytest.raises(RuntimeError), watch.stage("write"):
        raise RuntimeError("db down")
    assert set(watch.seconds) == {"encode", "write"}
    assert watch.seconds["encode"] >= 0.02
    assert watch.ms()["encode"] >= 20
