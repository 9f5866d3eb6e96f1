"""At-least-once delivery, exactly-once effect: duplicates and re-uploads against a real worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.db.session import session_scope
from shared.db.tags import record_human_decision
from tests.workers.stack import Images, Stack, event, processed, wait_processed


def model_rows(rows: list[tuple]) -> dict[tuple[str, str], float]:
    return {(axis, value): score for axis, value, score, _status, source in rows if source == "model"}


def test_same_event_delivered_twice_writes_one_set_of_rows(main_stack: Stack, images: Images,
                                                           tag_count: int) -> None:
    rec = images.records[0]
    ev = event(title=rec.text, image_uri=images.file_uri(rec.id))
    before = processed(main_stack)
    main_stack.publish(ev, ev)  # two deliveries, most likely in one batch
    main_stack.db.wait_events([ev["event_id"]], 60)
    wait_processed(main_stack, before + 2)
    first = main_stack.db.tags(ev["product_id"])
    main_stack.publish(ev)  # a third, later delivery: its own batch
    wait_processed(main_stack, before + 3)

    row = main_stack.db.events([ev["event_id"]])[ev["event_id"]]
    assert (row["status"], row["attempts"]) == ("tagged", 1)
    assert row["image_error"] is None and row["last_error"] is None
    tags = main_stack.db.tags(ev["product_id"])
    # The same rows again (a batch of one may round the last digit of a score differently).
    assert [(a, v, st, src) for a, v, _s, st, src in tags] == [(a, v, st, src) for a, v, _s, st, src in first]
    assert [t[2] for t in tags] == pytest.approx([t[2] for t in first], abs=1e-4)
    assert len(tags) == tag_count and {t[4] for t in tags} == {"model"}
    assert main_stack.db.dead_letters([ev["event_id"]]) == []
    product = main_stack.db.product(ev["product_id"])
    assert product is not None and product["title"] == rec.text


def test_reupload_replaces_model_tags_and_keeps_human_decisions(main_stack: Stack, images: Images,
                                                                tag_count: int) -> None:
    old, new = images.records[1], next(
        r for r in images.records[2:] if r.labels["articleType"] != images.records[1].labels["articleType"])
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    first = event(title=old.text, image_uri=images.file_uri(old.id), occurred_at=t0.isoformat())
    pid = first["product_id"]
    main_stack.publish(first)
    main_stack.db.wait_events([first["event_id"]], 60)
    old_tags = model_rows(main_stack.db.tags(pid))
    assert len(old_tags) == tag_count

    # A person rejects one of the model's tags and confirms a value the model did not propose.
    rejected = next(iter(old_tags))
    confirmed = ("usage", "Ethnic") if ("usage", "Ethnic") not in old_tags else ("usage", "Sports")
    with session_scope(main_stack.db.url) as session:
        record_human_decision(session, pid, *rejected, "rejected")
        record_human_decision(session, pid, *confirmed, "confirmed")

    later = (t0 + timedelta(minutes=1)).isoformat()
    second = event(pid, title=new.text, image_uri=images.file_uri(new.id), occurred_at=later)
    twin = event(title=new.text, image_uri=images.file_uri(new.id))  # the same content, fresh product
    main_stack.publish(second, twin)
    rows = main_stack.db.wait_events([second["event_id"], twin["event_id"]], 60)
    assert {r["status"] for r in rows.values()} == {"tagged"}

    human = {(a, v): st for a, v, _s, st, src in main_stack.db.tags(pid) if src == "human"}
    assert human == {rejected: "rejected", confirmed: "confirmed"}
    expected = {k: s for k, s in model_rows(main_stack.db.tags(twin["product_id"])).items() if k not in human}
    got = model_rows(main_stack.db.tags(pid))
    assert got.keys() == expected.keys(), "the model tags are the new upload's, nothing kept from the old"
    assert all(got[k] == pytest.approx(expected[k], abs=1e-4) for k in got)
    product = main_stack.db.product(pid)
    assert product["title"] == new.text and product["last_event_at"] == datetime.fromisoformat(later)

    # The old upload delivered again, late: recorded, but it changes nothing.
    before = processed(main_stack)
    main_stack.publish(first)
    wait_processed(main_stack, before + 1)
    assert model_rows(main_stack.db.tags(pid)) == got
    assert main_stack.db.product(pid)["title"] == new.text
    assert main_stack.db.events([first["event_id"]])[first["event_id"]]["status"] == "tagged"
