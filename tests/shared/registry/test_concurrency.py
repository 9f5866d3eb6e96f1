"""Two promotions at once on Postgres: the registry lock runs them one after the other, so the
second retires the first's new champion instead of failing on the one-live index."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from shared.db.migrate import upgrade
from shared.db.session import session_scope
from shared.registry import list_versions, promote, register
from shared.storage import LocalStore


def test_concurrent_promotions_serialise(make_database: Callable[[str], str], tmp_path: Path,
                                         make_model: Callable[[str], Path]) -> None:
    url = make_database("postgresql")
    upgrade(url)
    store = LocalStore(tmp_path / "objects")
    with session_scope(url) as session:
        register(session, store, make_model("v1"), status="live")
        register(session, store, make_model("v2"))
        register(session, store, make_model("v3"))

    first_holds_lock = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with session_scope(url) as session:
                promote(session, store, "v2", "first")
                first_holds_lock.set()
                time.sleep(1.0)  # the second promotion starts while this one is uncommitted
        except BaseException as exc:
            errors.append(exc)
            first_holds_lock.set()

    def second() -> None:
        first_holds_lock.wait(30)
        try:
            with session_scope(url) as session:
                promote(session, store, "v3", "second")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with session_scope(url) as session:
        assert {r.version: r.status for r in list_versions(session)} == {
            "v1": "retired", "v2": "retired", "v3": "live"}
