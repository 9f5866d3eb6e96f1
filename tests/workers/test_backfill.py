"""``tagger backfill``: products whose model tags came from an older model are re-tagged through
the tagging queue by a real worker, throttled, and a second run has nothing left to send."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.config import DEFAULT_MODEL_DIR, Settings, get_settings
from shared.db.session import session_scope
from shared.publish import Publisher
from tests.workers.db import Db
from tests.workers.procs import Worker, wait_for
from tests.workers.stack import event


def _tag_count(model: Path) -> int:
    """Model tag rows one prediction of ``model`` writes: the top 3 values (or fewer) of every axis."""
    axes = json.loads((model / "manifest.json").read_text())["axes"]
    return sum(min(3, len(axis["values"])) for axis in axes.values())


def _version_of(model: Path) -> str:
    return json.loads((model / "manifest.json").read_text())["version"]


def _model(tmp_path: Path, tag: str) -> Path:
    """The shipped model under a fresh version (registry versions are written once)."""
    out = shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / f"model-{tag}")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["version"] = f"{tag}-{uuid.uuid4().hex[:8]}"
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _register_live(s: Settings, model: Path) -> str:
    from shared.registry import register
    from shared.storage import open_store

    with session_scope(s.database_url) as session:
        return register(session, open_store(s.object_store_url, s), model, status="live").version


def _by_version(db: Db) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for r in db.rows("SELECT product_id, model_version FROM products"):
        found.setdefault(r["model_version"], set()).add(r["product_id"])
    return found


def _cli(*args: str) -> tuple[int, str]:
    from cli.main import app

    result = CliRunner().invoke(app, ["backfill", *args])
    return result.exit_code, " ".join(result.output.split())  # unwrap the console's line breaks


@pytest.fixture()
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Settings], None]]:
    """Point the in-process ``tagger`` command at a test's database, broker and object store."""

    def point(s: Settings) -> None:
        for name in ("database_url", "broker_url", "object_store_url", "cache_dir"):
            monkeypatch.setenv(f"TAGGER_{name.upper()}", str(getattr(s, name)))
        get_settings.cache_clear()

    yield point
    get_settings.cache_clear()


# --- without a worker -----------------------------------------------------------------------------

def _seed(url: str, version: str, product_ids: list[str]) -> None:
    """Products as a worker running ``version`` would have left them (one model tag each)."""
    from shared.db.tags import TaggingResult, apply_batch

    now = datetime.now(UTC)
    with session_scope(url) as session:
        apply_batch(session, [
            TaggingResult(event_id=f"seed-{p}", product_id=p, seller_id="s1", title=f"Product {p}",
                          description=None, image_uri=None, locale=None, occurred_at=now,
                          content_hash="h", model_version=version, tags=[("gender", "Men", 0.9, "auto")])
            for p in product_ids
        ])


def test_backfill_is_throttled_from_the_first_event(make_db: Callable[..., str], settings: Settings) -> None:
    from workers.backfill import run_backfill

    s = Settings(database_url=make_db(), cache_dir=settings.cache_dir)
    _seed(s.database_url, "old", [f"p{i:02d}" for i in range(10)])
    sent_at: list[float] = []
    ids: list[str] = []

    def publish(events: list) -> None:
        sent_at.extend(time.monotonic() for _ in events)
        ids.extend(e.event_id for e in events)

    started = time.monotonic()
    assert run_backfill(s, publish, live="new", rate=20) == 10
    elapsed = time.monotonic() - started
    # Event k is due k/20 s after the start: the tenth at 0.45 s. No upper bound (a busy machine).
    assert elapsed >= 0.4, f"10 events at 20/s took {elapsed:.3f}s"
    for k, at in enumerate(sent_at):
        assert at - started >= k / 20 - 0.01, f"event {k} sent {at - started:.3f}s after the start"
    assert ids == [f"backfill-new-p{i:02d}" for i in range(10)]

    for bad in (0.0, -5.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rate"):
            run_backfill(s, publish, live="new", rate=bad)
    with pytest.raises(ValueError, match="unknown model version 'nope'"):
        run_backfill(s, publish, live="new", older_than="nope")


def test_long_product_ids_keep_distinct_valid_event_ids() -> None:
    from shared.db.models import Product
    from workers.backfill import backfill_events

    now = datetime.now(UTC)
    long_a, long_b = "x" * 190 + "a", "x" * 190 + "b"  # same first 190 characters
    products = [Product(product_id=pid, seller_id="s", title="t", description=None, image_uri=None,
                        locale=None, content_hash="h", last_event_at=now, model_version="v1")
                for pid in ("short", long_a, long_b)]
    events = backfill_events(products, "model-v2")
    assert events[0].event_id == "backfill-model-v2-short"
    assert len({e.event_id for e in events}) == 3  # cut at 200 characters, the two long ones collided
    assert all(len(e.event_id) <= 200 for e in events)
    assert [e.occurred_at for e in events] == [now] * 3  # the stored upload's time: not newer, not stale
    # Deterministic: a re-run sends the same ids, which the worker de-duplicates.
    assert [e.event_id for e in backfill_events(products, "model-v2")] == [e.event_id for e in events]


def test_cli_refuses_a_bad_rate_and_a_registry_without_a_live_model(
    make_db: Callable[..., str], settings: Settings, tmp_path: Path, cli_env: Callable[[Settings], None],
) -> None:
    cli_env(Settings(database_url=make_db(), broker_url="redis://127.0.0.1:1/0",
                     object_store_url=f"file://{tmp_path / 'objects'}", cache_dir=settings.cache_dir))
    for rate in ("0", "-1", "nan", "inf"):
        code, out = _cli("--rate", rate)
        assert code == 2, out
        assert "--rate must be" in out
    code, out = _cli()
    assert code == 2, out
    assert "no live model version" in out and "tagger models list" in out


# --- with a real worker ---------------------------------------------------------------------------

def _wait_swap(worker: Worker, pub: Publisher, db: Db, version: str, probes: list[str]) -> None:
    """Send probe uploads (a swap is checked between batches) until the worker serves ``version``."""

    def swapped() -> bool:
        ev = event(title="Nike Men Blue Running Shoes")
        pub.publish([ev])
        probes.append(ev["event_id"])
        time.sleep(0.5)
        return f"to={version} ms=" in worker.log()  # model_swapped from=... to=VERSION ms=...

    wait_for(swapped, 120, f"worker to swap to {version}", every=0.5)
    db.wait_events(probes, 60)


def test_backfill_retags_through_a_running_worker_and_resumes_with_nothing_left(
    make_redis: Callable, make_db: Callable[..., str], worker_env: Callable, start_worker: Callable,
    model_dir: Path, tag_count: int, settings: Settings, tmp_path: Path,
    cli_env: Callable[[Settings], None],
) -> None:
    from workers.backfill import run_backfill, stale_products

    redis, url = make_redis(), make_db()
    s = Settings(database_url=url, broker_url=redis.url, object_store_url=f"file://{tmp_path / 'objects'}",
                 cache_dir=settings.cache_dir, device="cpu")
    a = _register_live(s, model_dir)  # the model the worker is started with
    assert a == _version_of(model_dir)
    worker = start_worker("backfill", worker_env(redis, url, object_store_url=s.object_store_url))
    db = Db(url)
    probes: list[str] = []
    try:
        with Publisher(redis.url) as pub:
            # Version A tags six products.
            first = [event(product_id=f"bf-a{i}", title=t) for i, t in enumerate(
                ["Puma Men Black Running Shoes", "Nike Women Pink Top", "Titan Men Steel Watch",
                 "Levis Men Blue Jeans", "Lavie Women Brown Handbag", "Fila Men White Sneakers"])]
            pub.publish(first)
            rows = db.wait_events([e["event_id"] for e in first], 120)
            assert {r["model_version"] for r in rows.values()} == {a}

            # B goes live; the worker follows it and tags three more.
            b = _register_live(s, _model(tmp_path, "bf-b"))
            _wait_swap(worker, pub, db, b, probes)
            second = [event(product_id=f"bf-b{i}", title=t) for i, t in enumerate(
                ["Adidas Men Grey Tshirt", "Baggit Women Red Wallet", "Reebok Men Black Cap"])]
            pub.publish(second)
            rows = db.wait_events([e["event_id"] for e in second], 120)
            assert {r["model_version"] for r in rows.values()} == {b}

            # C goes live.
            c = _register_live(s, _model(tmp_path, "bf-c"))
            _wait_swap(worker, pub, db, c, probes)

            before = _by_version(db)
            assert set(before) <= {a, b, c}
            tagged_a, tagged_b = before[a], before[b]  # the probes landed on either side
            assert {f"bf-a{i}" for i in range(6)} <= tagged_a
            assert {f"bf-b{i}" for i in range(3)} <= tagged_b
            assert {(t[4], len(db.tags("bf-a0"))) for t in db.tags("bf-a0")} == {("model", tag_count)}

            def selected(older_than: str | None) -> set[str]:
                return {p.product_id for p in stale_products(s, c, older_than, limit=10_000)}

            assert selected(None) == tagged_a | tagged_b
            assert selected(a) == tagged_a  # created before A (none) and A itself
            assert selected(b) == tagged_a | tagged_b
            assert selected(c) == tagged_a | tagged_b  # never C's own products

            # --older-than A: only A's products, through the queue, at most 200/s.
            sent = run_backfill(s, pub.publish, live=c, older_than=a, rate=200)
            assert sent == len(tagged_a)
            done = db.wait_events([f"backfill-{c}-{p}" for p in tagged_a], 120)
            assert {r["status"] for r in done.values()} == {"tagged"}
            assert {r["model_version"] for r in done.values()} == {c}
            after = _by_version(db)
            assert after[c] >= tagged_a and after[b] == tagged_b

            # The rest through the command: B's products.
            cli_env(s)
            code, out = _cli("--rate", "200")
            assert code == 0, out
            assert f"{len(tagged_b)} re-tag events published for model {c}" in out
            done = db.wait_events([f"backfill-{c}-{p}" for p in tagged_b], 120)
            assert {r["model_version"] for r in done.values()} == {c}

            # Every product now carries C, with exactly one set of model tags (C's, nothing older).
            assert set(_by_version(db)) == {c}
            sets = db.rows("SELECT product_id, model_version, count(*) AS n FROM product_tags "
                           "WHERE source = 'model' GROUP BY product_id, model_version")
            assert {r["product_id"] for r in sets} == tagged_a | tagged_b | before.get(c, set())
            assert {(r["model_version"], r["n"]) for r in sets} == {(c, _tag_count(DEFAULT_MODEL_DIR))}
            assert len(sets) == len({r["product_id"] for r in sets})

            # Resumable and idempotent: nothing is left to send, however it is asked.
            assert run_backfill(s, pub.publish, live=c, rate=200) == 0
            assert run_backfill(s, pub.publish, live=c, older_than=b, rate=200) == 0
            code, out = _cli("--rate", "200")
            assert code == 0 and f"0 re-tag events published for model {c}" in out, out
            code, out = _cli("--older-than", "no-such-version")
            assert code == 2 and "unknown model version 'no-such-version'" in out, out
            assert redis.backlog() == (0, 0)
    finally:
        db.close()
