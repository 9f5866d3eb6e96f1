"""A bad item fails alone: broken images fall back to the text, malformed messages are dead-lettered."""

from __future__ import annotations

import os
import re

from celery import Celery

from tests.workers.procs import wait_for
from tests.workers.stack import BUCKET, S3, Images, Stack, event, png, wait_processed


def send(app: Celery, **kwargs: object) -> None:
    app.send_task("tagger.tag_product", kwargs=kwargs, queue="tagging")


def test_broken_images_fall_back_to_text_and_record_why(main_stack: Stack, images: Images, s3: S3,
                                                        tag_count: int) -> None:
    jpeg = images.data[images.records[3].id]
    broken = {  # image_uri -> what image_error must say
        images.write("garbage.jpg", b"this is not an image" * 20): "cannot decode image",
        images.write("truncated.jpg", jpeg[: len(jpeg) // 2]): "cannot decode image",
        (images.folder / "missing.jpg").as_uri(): "image not found",
        f"s3://{BUCKET}/missing/nothing.jpg": "NoSuchKey",
        images.write("huge-file.jpg", os.urandom(150_000)): "over the 100000 limit",
        images.write("huge-pixels.png", png(1100, 1000)): "over the 1000000 pixel limit",
        f"s3://{BUCKET}/hang/slow.jpg": "timed out",
        "https://localhost:99999/bad-port.jpg": "malformed URI",
        images.write("empty.jpg", b""): "is empty",
    }
    good = [event(title=r.text, image_uri=images.file_uri(r.id)) for r in images.records[4:7]]
    bad = {uri: event(title=images.records[i].text, image_uri=uri) for i, uri in enumerate(broken, 10)}
    evs = [good[0], *list(bad.values())[:5], good[1], *list(bad.values())[5:], good[2]]
    main_stack.publish(*evs)

    rows = main_stack.db.wait_events([e["event_id"] for e in evs], 90)
    for uri, ev in bad.items():
        row = rows[ev["event_id"]]
        assert row["status"] == "tagged", (uri, row)
        assert broken[uri] in (row["image_error"] or ""), (uri, row["image_error"])
        assert len(main_stack.db.tags(ev["product_id"])) == tag_count, uri  # tags from the title
    for ev in good:
        assert rows[ev["event_id"]]["image_error"] is None
        assert len(main_stack.db.tags(ev["product_id"])) == tag_count
    # No batch failed: every event was tagged on its first attempt, none dead-lettered.
    assert {r["attempts"] for r in rows.values()} == {1}
    assert main_stack.db.dead_letters([e["event_id"] for e in evs]) == []


def test_malformed_messages_are_dead_lettered_without_failing_their_batch(
    main_stack: Stack, raw_app: Celery, tag_count: int
) -> None:
    before_batches = main_stack.worker.count("batch_tagged")
    marker = os.urandom(4).hex()
    good = [event(title="Nike Men White Sports Shoes"), event(title="Lakme Women Red Lipstick")]
    missing_title = event(imageUri="s3://x/y.jpg")
    del missing_title["title"]
    send(raw_app, event=good[0])
    send(raw_app, event=missing_title)
    send(raw_app, event=f"not-an-object-{marker}")
    send(raw_app, event=event(title="Roadster Men Blue Jeans"), attempt=f"bad-{marker}")
    send(raw_app, event=event(title="Nul\x00 in the title"))
    send(raw_app, event=good[1])

    rows = main_stack.db.wait_events([e["event_id"] for e in good], 60)
    assert {(r["status"], r["attempts"], r["image_error"]) for r in rows.values()} == {("tagged", 1, None)}
    for ev in good:
        assert len(main_stack.db.tags(ev["product_id"])) == tag_count
    wait_processed(main_stack, 0)  # everything acked

    dead = wait_for(lambda: main_stack.db.dead_letters([missing_title["event_id"]]), 30, "a dead letter")
    reason = dead[0]["reason"]
    assert "title: required field is missing" in reason and "imageUri: unknown field" in reason
    assert main_stack.db.events([missing_title["event_id"]]) == {}  # a malformed event is not an event
    no_id = main_stack.db.dead_letters_like(f"not-an-object-{marker}")
    assert len(no_id) == 1 and no_id[0]["event_id"] is None
    assert [d["reason"] for d in main_stack.db.dead_letters_like(f"bad-{marker}")] == [
        "attempt: must be a positive integer"]
    nul = main_stack.db.dead_letters_like("Nul\\\\u0000 in the title")
    assert [d["reason"] for d in nul] == ["event: contains a NUL character"]
    # At least one batch held both good and malformed messages, and still wrote the good ones.
    mixed = [(int(n), int(d)) for n, d in re.findall(r"batch_tagged n=(\d+) dead_lettered=(\d+)",
                                                     main_stack.worker.log())][before_batches:]
    assert any(d > 0 and n > d for n, d in mixed), mixed
