"""Run a module's main under cProfile, every thread included, and write the merged pstats at exit.

    python -m bench.profiled OUT.prof uvicorn api.app:create_app --factory ...

``BENCH_PROFILER=yappi`` (yappi installed): CPU time instead of wall time, every thread, the same
pstats file; waits do not count, so the costs per request stand out on a busy machine.

Benchmarks only. Each thread started after this gets its own profiler (cProfile follows one thread),
all merged into ``OUT.prof`` when the program ends (a normal exit or SystemExit, e.g. SIGTERM
handled by uvicorn or celery). Wall-clock profiles: waits (a queue's get, a socket's recv) count.
"""

from __future__ import annotations

import contextlib
import runpy
import signal
import sys
from collections.abc import Callable
from typing import Any


def _stop(signum: int, _frame: Any) -> None:
    """uvicorn handles SIGTERM itself, then restores the handler it found and raises the signal
    again: this handler turns that into SystemExit, so the stats are still written."""
    raise SystemExit(128 + signum)


def _yappi(main: Callable[[], Any], path: str) -> None:
    import yappi

    yappi.set_clock_type("cpu")
    signal.signal(signal.SIGTERM, _stop)
    yappi.start(builtins=True)
    try:
        main()
    finally:
        yappi.stop()
        yappi.get_func_stats().save(path, type="pstat")


def profiled(main: Callable[[], Any], path: str) -> None:
    """Run ``main`` with a cProfile per thread; merge them into ``path`` at exit."""
    import os

    if os.environ.get("BENCH_PROFILER") == "yappi":
        _yappi(main, path)
        return
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def bootstrap(self: threading.Thread) -> None:  # wraps run(), also where a subclass overrides it
        prof = cProfile.Profile()
        with lock:
            profiles.append(prof)
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()

    threading.Thread._bootstrap_inner = bootstrap  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, _stop)
    main_prof = cProfile.Profile()
    profiles.append(main_prof)
    main_prof.enable()
    try:
        main()
    finally:
        main_prof.disable()
        for prof in profiles:
            prof.disable()  # threads still alive at exit: stop them so the stats can be read
        stats = pstats.Stats(profiles[0])
        for prof in profiles[1:]:
            with contextlib.suppress(TypeError):  # a profiler that never ran anything
                stats.add(prof)
        stats.dump_stats(path)


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m bench.profiled OUT.prof MODULE [ARGS...]")
    path, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    profiled(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), path)


if __name__ == "__main__":
    main()
