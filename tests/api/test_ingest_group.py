"""Group commit of POST /v1/events: concurrent requests share outbox rounds, answers stay per request."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import OperationalError

from api.ingest import GroupCommit
from shared.events import ProductUploaded

T0 = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)


def ev(n: int, title: str = "Shoes") -> ProductUploaded:
    return ProductUploaded(event_id=f"evt-{n}", product_id=f"sku-{n}", seller_id="s1", title=title,
                           occurred_at=T0)


class FakeOutbox:
    """Records each round's events; the first round blocks until released, so others queue behind it."""

    def __init__(self, fail: type[Exception] | None = None, bad_title: str | None = None) -> None:
        self.rounds: list[list[str]] = []
        self.release = threading.Event()
        self.fail, self.bad_title = fail, bad_title

    def __call__(self, events: list[ProductUploaded]) -> bool:
        if not self.rounds:
            self.release.wait(5)
        self.rounds.append([e.event_id for e in events])
        if self.fail is not None:
            raise self.fail("SELECT 1", {}, Exception("connection refused"))  # type: ignore[call-arg]
        if self.bad_title and any(e.title == self.bad_title for e in events):
            raise ValueError("refused")
        return True


async def submit_all(group: GroupCommit, outbox: FakeOutbox, batches: list[list[ProductUploaded]]) -> list:
    first = asyncio.create_task(group.submit(batches[0]))
    await asyncio.sleep(0.05)  # the first round is running (blocked)
    rest = [asyncio.create_task(group.submit(b)) for b in batches[1:]]
    await asyncio.sleep(0.05)
    outbox.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_requests_that_arrive_during_a_round_share_the_next_one() -> None:
    outbox = FakeOutbox()
    group = GroupCommit(send=outbox, max_events=500, in_flight=1)
    answers = asyncio.run(submit_all(group, outbox, [[ev(1)], [ev(2)], [ev(3), ev(4)], [ev(2)]]))
    assert answers == [True, True, True, True]
    # One round for the first request, one for the three that waited; evt-2 sent once.
    assert outbox.rounds == [["evt-1"], ["evt-2", "evt-3", "evt-4"]]


def test_a_round_holds_at_most_max_events_and_never_splits_a_request() -> None:
    outbox = FakeOutbox()
    group = GroupCommit(send=outbox, max_events=3, in_flight=1)
    answers = asyncio.run(submit_all(group, outbox, [[ev(1)], [ev(2), ev(3)], [ev(4), ev(5)], [ev(6)]]))
    assert answers == [True] * 4
    assert outbox.rounds == [["evt-1"], ["evt-2", "evt-3"], ["evt-4", "evt-5", "evt-6"]]


def test_a_refused_round_is_retried_request_by_request() -> None:
    outbox = FakeOutbox(bad_title="poison")
    group = GroupCommit(send=outbox, max_events=500, in_flight=1)
    answers = asyncio.run(submit_all(group, outbox, [[ev(1)], [ev(2)], [ev(3, "poison")], [ev(4)]]))
    assert answers[:2] == [True, True] and answers[3] is True
    assert isinstance(answers[2], ValueError)  # only the request with the bad event fails
    assert outbox.rounds == [["evt-1"], ["evt-2", "evt-3", "evt-4"], ["evt-2"], ["evt-3"], ["evt-4"]]


def test_an_unreachable_database_fails_every_request_of_the_round_at_once() -> None:
    outbox = FakeOutbox(fail=OperationalError)
    group = GroupCommit(send=outbox, max_events=500, in_flight=1)
    answers = asyncio.run(submit_all(group, outbox, [[ev(1)], [ev(2)], [ev(3)]]))
    assert all(isinstance(a, OperationalError) for a in answers)  # -> 503 each
    assert outbox.rounds == [["evt-1"], ["evt-2", "evt-3"]]  # no request-by-request retries


@pytest.mark.parametrize("in_flight", [1, 2])
def test_rounds_in_flight_are_bounded(in_flight: int) -> None:
    running, peak = 0, 0
    lock = threading.Lock()

    def send(events: list[ProductUploaded]) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        threading.Event().wait(0.02)
        with lock:
            running -= 1
        return True

    async def main() -> list[bool]:
        group = GroupCommit(send=send, max_events=1, in_flight=in_flight)
        return await asyncio.gather(*(group.submit([ev(i)]) for i in range(8)))

    assert asyncio.run(main()) == [True] * 8
    assert peak == in_flight
