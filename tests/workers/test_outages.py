"""A database outage is not the events' fault; a refused write is narrowed down to its events.

Real Postgres throughout. The outage is a real network cut: a forwarder (tests/netcut.py) in front of
the server resets every connection and refuses new ones, then accepts them again."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from shared.config import Settings
from shared.db.faults import Fault, classify, describe
from shared.db.session import get_engine
from shared.db.tags import TaggingResult
from shared.publish import Publisher
from tests.netcut import NetCut
from tests.workers.db import Db
from tests.workers.procs import RedisServer, Worker, free_port, wait_for
from tests.workers.stack import BUCKET, S3, S3_ENV, Images, event
from workers.deliveries import decode
from workers.readiness import readiness
from workers.writes import OutageTimeout, write

TITLE = "Private Seller Title 4711 Blue Dress"
POISON_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))  # UTC year 10000


class Req:
    def __init__(self, kwargs: dict) -> None:
        self.kwargs, self.args, self.id = kwargs, (), uuid.uuid4().hex


def pair(occurred_at: datetime | None = None) -> tuple[Any, TaggingResult]:
    ev = event(title=TITLE, image_uri="s3://bucket/private-photo.jpg")
    (d,) = decode(Req({"event": ev}), 3)
    assert d.event is not None, d.reason
    r = TaggingResult(
        event_id=d.event.event_id, product_id=d.event.product_id, seller_id="s1", title=TITLE,
        description=None, image_uri=d.event.image_uri, locale=None,
        occurred_at=occurred_at or d.event.occurred_at, content_hash="h", model_version="v1",
        tags=(("gender", "Women", 0.99, "auto"),), attempts=1,
    )
    return d, r


@pytest.fixture
def proxied(make_db: Callable[..., str]) -> Iterator[tuple[Settings, NetCut, Db]]:
    """A fresh database reached through a forwarder the test can cut."""
    url = make_db()
    parsed = sa.make_url(url)
    cut = NetCut(parsed.host or "127.0.0.1", parsed.port or 5432)
    via = parsed.set(host="127.0.0.1", port=cut.port).render_as_string(hide_password=False)
    db = Db(url)
    yield Settings(database_url=via, outage_backoff_max_s=0.5, outage_max_wait_s=60), cut, db
    cut.close()
    get_engine(via).dispose()
    db.close()


def test_faults_are_classified_from_real_errors_and_described_without_values(
    make_db: Callable[..., str],
) -> None:
    url = make_db()
    with pytest.raises(sa.exc.DBAPIError) as refused, get_engine(url).connect() as conn:
        conn.execute(sa.text("SELECT CAST(:v AS integer)"), {"v": "secret-value-42"})
    assert classify(refused.value) is Fault.EVENT
    text = describe(refused.value)
    assert text.startswith("write: InvalidTextRepresentation (SQLSTATE 22P02") and "secret" not in text
    # The engine hides the bound parameters, but the server's own message quotes the value: this is
    # why logs and dead letters carry describe(), never str(exc).
    assert "parameters hidden" in str(refused.value) and "secret" in str(refused.value)

    down = sa.make_url(url).set(port=free_port()).render_as_string(hide_password=False)
    with pytest.raises(sa.exc.OperationalError) as unreachable:
        get_engine(down).connect()
    assert classify(unreachable.value) is Fault.INFRA


def test_a_refused_event_is_dead_lettered_alone_and_its_batch_mates_are_written(
    proxied: tuple[Settings, NetCut, Db],
) -> None:
    s, _, db = proxied
    pairs = [pair() for _ in range(8)]
    pairs.insert(5, pair(POISON_TIME))
    report = write(s, pairs)
    poison = pairs[5][0]
    assert [d.event_id for d, _ in report.refused] == [poison.event_id]
    reason = report.refused[0][1]
    # psycopg refuses it before the server does (client side): the table, and the field named.
    assert reason == "write: OverflowError (table products); occurred_at: out of range in UTC", reason
    events = db.events(d.event_id for d, _ in pairs)
    assert {events[d.event_id]["status"] for d, _ in pairs if d is not poison} == {"tagged"}
    assert (events[poison.event_id]["status"], events[poison.event_id]["attempts"]) == ("dead", 1)
    (dl,) = db.dead_letters()
    assert (dl["event_id"], dl["reason"]) == (poison.event_id, reason)
    assert TITLE not in dl["reason"] and "private-photo" not in dl["reason"]
    assert report.transactions <= 2 * 4 + 3  # bisection: a few transactions per level, not one per event


def test_a_write_waits_out_an_outage_without_counting_attempts(proxied: tuple[Settings, NetCut, Db]) -> None:
    s, cut, db = proxied
    pairs = [pair() for _ in range(4)]
    write(s, pairs[:1])  # the engine has pooled connections, as in a running worker
    cut.cut()
    done: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: done.update(report=write(s, pairs[1:])))
    thread.start()
    wait_for(lambda: readiness()[1]["database_up"] is False, 10, "the worker to notice the outage")
    time.sleep(2)
    assert thread.is_alive()  # still waiting, holding its batch
    cut.restore()
    thread.join(30)
    assert not thread.is_alive() and readiness()[1]["database_up"] is True
    report = done["report"]
    assert report.waited_s >= 2 and not report.refused and not report.failed
    rows = db.events(d.event_id for d, _ in pairs)
    assert {(r["status"], r["attempts"]) for r in rows.values()} == {("tagged", 1)}
    assert db.dead_letters() == []


def test_an_outage_longer_than_the_wait_hands_the_batch_back(proxied: tuple[Settings, NetCut, Db]) -> None:
    s, cut, db = proxied
    pairs = [pair() for _ in range(3)]
    cut.cut()
    with pytest.raises(OutageTimeout):
        write(s.model_copy(update={"outage_max_wait_s": 1.5}), pairs)
    cut.restore()
    assert db.events(d.event_id for d, _ in pairs) == {} and db.dead_letters() == []


def _ready(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_worker_whose_database_is_cut_tags_its_backlog_when_it_is_back(
    make_redis: Callable[..., RedisServer], make_db: Callable[..., str], worker_env: Callable[..., dict],
    start_worker: Callable[..., Worker],
) -> None:
    """Issue 11's case: 45 s without a database dead-lettered the whole backlog. Now the worker turns
    not-ready, waits without re-running inference, and tags every event once it is back."""
    redis, url = make_redis(), make_db()
    parsed = sa.make_url(url)
    cut = NetCut(parsed.host or "127.0.0.1", parsed.port or 5432)
    via = parsed.set(host="127.0.0.1", port=cut.port).render_as_string(hide_password=False)
    port = free_port()
    worker = start_worker("outage", worker_env(redis, via, metrics_port=port, outage_backoff_max_s=1,
                                               batch_size=4))
    db = Db(url)
    try:
        assert _ready(port)[0] == 200
        cut.cut()
        events = [event() for _ in range(20)]
        with Publisher(redis.url) as publisher:
            publisher.publish(events)
        wait_for(lambda: _ready(port)[0] == 503, 30, "the worker to report not ready")
        status, body = _ready(port)
        assert body["database_up"] is False and body["model_loaded"] is True
        time.sleep(8)
        inferred = worker.count("write_waits_for_database")
        cut.restore()
        rows = db.wait_events([e["event_id"] for e in events], timeout=90, statuses=("tagged",))
        assert {r["attempts"] for r in rows.values()} == {1}
        assert db.dead_letters() == []
        assert worker.count("write_waits_for_database") == inferred <= 1  # no inference re-run per probe
        wait_for(lambda: _ready(port)[0] == 200, 10, "the worker to be ready again")
        assert "database_back" in worker.log() and worker.alive() and worker.starts == 1
    finally:
        worker.stop()
        cut.close()
        db.close()


def test_an_object_store_outage_is_waited_out_and_the_photos_are_used(
    make_redis: Callable[..., RedisServer], make_db: Callable[..., str], worker_env: Callable[..., dict],
    start_worker: Callable[..., Worker], s3: S3, images: Images,
) -> None:
    """s3:// photos live in our object store: when it is unreachable the worker waits for it (not
    ready meanwhile) instead of tagging the products without their photos, and counts no attempt."""
    redis, url = make_redis(), make_db()
    front_port = int(s3.front.url.rsplit(":", 1)[1])
    cut = NetCut("127.0.0.1", front_port)
    port = free_port()
    env = worker_env(redis, url, metrics_port=port, outage_backoff_max_s=1, batch_size=4,
                     image_buckets=f'["{BUCKET}"]', s3_endpoint_url=f"http://127.0.0.1:{cut.port}",
                     fetch_timeout_s=2)
    env.update(S3_ENV)
    worker = start_worker("store-outage", env)
    db = Db(url)
    try:
        recs = images.records[:4]
        uris = [s3.put(f"outage/{r.id}.jpg", images.data[r.id]) for r in recs]
        events = [event(title=r.text, image_uri=u) for r, u in zip(recs, uris, strict=True)]
        cut.cut()
        with Publisher(redis.url) as publisher:
            publisher.publish(events)
        wait_for(lambda: _ready(port)[0] == 503, 60, "the worker to report not ready")
        assert _ready(port)[1]["object_store_up"] is False
        assert db.events(e["event_id"] for e in events) == {}  # nothing tagged without its photo
        cut.restore()
        rows = db.wait_events([e["event_id"] for e in events], timeout=90, statuses=("tagged",))
        assert {(r["attempts"], r["image_error"]) for r in rows.values()} == {(1, None)}
        assert db.dead_letters() == []
        wait_for(lambda: _ready(port)[0] == 200, 10, "the worker to be ready again")
        assert "object_store_back" in worker.log()
    finally:
        worker.stop()
        cut.close()
        db.close()


def test_the_store_is_down_only_when_no_photo_from_it_arrived() -> None:
    """One object answering 5xx while others arrive is that event's problem (tagged without its
    photo), so one bad object never holds the queue; all failing means the store is down."""
    from shared.fetch import FetchError
    from workers.tagging import store_down

    gone = FetchError("s3://b/k: InternalError", unavailable=True)
    missing = FetchError("s3://b/x: NoSuchKey")
    assert store_down(["s3://b/k", "s3://b/j"], [gone, gone]) is gone
    assert store_down(["s3://b/k", "s3://b/j"], [gone, b"jpeg"]) is None
    assert store_down(["s3://b/k", "https://seller.example/p.jpg"], [gone, b"jpeg"]) is gone
    assert store_down(["s3://b/x", None], [missing, None]) is None
