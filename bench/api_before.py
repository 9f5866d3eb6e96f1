"""Run a module (uvicorn) with the ingest path switched back to what it was before issue 13's
producer work, for before/after numbers on the same machine:

  - no group commit: each request its own outbox round (``TAGGER_API_INGEST_ROUNDS=0``);
  - the enqueued marks committed durably (``shared.outbox.ASYNC_MARK = False``);
  - the outbox rows as an executemany and IN lists (``shared.db.sql.SET_BASED = False``);
  - every message through Celery's ``send_task`` (as when publish signals are connected).

    python -m bench.api_before uvicorn api.app:create_app --factory ...

Benchmarks only (``bench/ingest.py --before``); one process (uvicorn ``--workers 1``): the switches
are module attributes of this process.
"""

from __future__ import annotations

import os
import runpy
import sys


def switch_back() -> None:
    import shared.db.sql
    import shared.outbox
    from shared.publish import Publisher

    os.environ["TAGGER_API_INGEST_ROUNDS"] = "0"  # read when the app is created, after this
    shared.outbox.ASYNC_MARK = False
    shared.db.sql.SET_BASED = False
    Publisher._signals_connected = staticmethod(lambda: True)  # type: ignore[method-assign]


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m bench.api_before MODULE [ARGS...]")
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    switch_back()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
