"""Read-only views of the pipeline's tables for assertions, and waits on them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests.workers.procs import wait_for

DONE = ("tagged", "failed", "dead")


class Db:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, poolclass=NullPool)

    def close(self) -> None:
        self.engine.dispose()

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]

    def events(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        rows = self.rows("SELECT * FROM tagging_events WHERE event_id = ANY(:ids)", ids=list(ids))
        return {r["event_id"]: r for r in rows}

    def tags(self, product_id: str) -> list[tuple]:
        """(axis, value, score, status, source) of one product, sorted."""
        rows = self.rows("SELECT axis, value, score, status, source FROM product_tags "
                         "WHERE product_id = :p ORDER BY axis, value", p=product_id)
        return [(r["axis"], r["value"], r["score"], r["status"], r["source"]) for r in rows]

    def product(self, product_id: str) -> dict[str, Any] | None:
        rows = self.rows("SELECT * FROM products WHERE product_id = :p", p=product_id)
        return rows[0] if rows else None

    def dead_letters(self, event_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        if event_ids is None:
            return self.rows("SELECT * FROM dead_letters ORDER BY id")
        return self.rows("SELECT * FROM dead_letters WHERE event_id = ANY(:ids) ORDER BY id",
                         ids=list(event_ids))

    def dead_letters_like(self, text: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM dead_letters WHERE payload LIKE :t ORDER BY id", t=f"%{text}%")

    def wait_events(self, ids: Iterable[str], timeout: float, statuses: tuple[str, ...] = DONE
                    ) -> dict[str, dict[str, Any]]:
        """Wait until every event has a row in one of ``statuses``; returns the rows."""
        ids = list(ids)

        def check() -> dict[str, dict[str, Any]] | None:
            got = self.events(ids)
            return got if all(got.get(i, {}).get("status") in statuses for i in ids) else None

        try:
            return wait_for(check, timeout, f"{len(ids)} events to reach {statuses}", every=0.2)  # type: ignore[return-value]
        except AssertionError:
            got = self.events(ids)
            states = {i: got.get(i, {}).get("status") for i in ids}
            missing = {i: st for i, st in states.items() if st not in statuses}
            raise AssertionError(f"events not {statuses} in {timeout:.0f}s: {missing}") from None
