"""Follow the live audit's switches without a restart: which values the model must not auto-apply now.

Before each batch the worker asks (at most every ``TAGGER_AUDIT_POLL_S``) for the switched-off set:
one short query on a table with a row per audited value. A database error keeps the last known set
(the batch's own write will fail and be retried anyway); nothing here raises.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from shared.audit import Pair, switched_off
from shared.db.session import session_scope

log = logging.getLogger("workers.audit")


class SwitchWatcher:
    """The switched-off (axis, value) set as last read from ``auto_switches``."""

    def __init__(self, database_url: str, interval_s: float = 5.0) -> None:
        self.database_url = database_url
        self.interval_s = interval_s
        self.off: frozenset[Pair] = frozenset()
        self._last = -math.inf
        self._lock = threading.Lock()

    def poll(self) -> frozenset[Pair]:
        """The current set, re-read when ``interval_s`` has passed since the last read; never raises."""
        with self._lock:  # batches run on several threads: one of them reads, the others use the set
            now = time.monotonic()
            if now - self._last < self.interval_s:
                return self.off
            self._last = now
            try:
                with session_scope(self.database_url) as session:
                    off = switched_off(session)
            except Exception as exc:
                log.warning("auto_switches_check_failed error=%s kept_off=%d", type(exc).__name__,
                            len(self.off))
                return self.off
            if off != self.off:
                log.info("auto_switches_read off=%s", ",".join(f"{a}={v}" for a, v in sorted(off)) or "-")
            self.off = off
            return off
