"""Images through boto3 from S3 (moto on loopback), and URIs refused by policy before any request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import CountingListener
from tests.workers.stack import S3, Images, Stack, event


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    lst = CountingListener()
    yield lst
    lst.close()


def test_s3_image_is_fetched_and_used(main_stack: Stack, images: Images, s3: S3) -> None:
    rec = images.records[20]
    uri = s3.put(f"products/{rec.id}.jpg", images.data[rec.id])
    with_image = event(title=rec.text, image_uri=uri)
    text_only = event(title=rec.text)
    main_stack.publish(with_image, text_only)

    rows = main_stack.db.wait_events([with_image["event_id"], text_only["event_id"]], 60)
    assert rows[with_image["event_id"]]["status"] == "tagged"
    assert rows[with_image["event_id"]]["image_error"] is None
    assert any(p.split("?")[0].endswith(f"/products/{rec.id}.jpg") for p in s3.front.requests)
    # Same title: the scores differ only because the photo was read.
    scores = [{(a, v): s for a, v, s, _st, _src in main_stack.db.tags(e["product_id"])}
              for e in (with_image, text_only)]
    differs = scores[0].keys() != scores[1].keys() or any(
        abs(scores[0][k] - scores[1][k]) > 1e-3 for k in scores[0])
    assert differs


def test_refused_uris_make_no_request_and_record_the_reason(main_stack: Stack, listener: CountingListener,
                                                           s3: S3, tag_count: int) -> None:
    refused = {
        "https://images.example.net/a.jpg": "host 'images.example.net' is not in TAGGER_IMAGE_HOSTS",
        f"https://localhost:{listener.port}/a.jpg": "resolves to non-public address",
        "s3://other-bucket/a.jpg": "bucket 'other-bucket' is not in TAGGER_IMAGE_BUCKETS",
    }
    evs = {uri: event(title="Fossil Men Brown Leather Watch", image_uri=uri) for uri in refused}
    seen = len(s3.front.requests)
    main_stack.publish(*evs.values())

    rows = main_stack.db.wait_events([e["event_id"] for e in evs.values()], 60)
    for uri, ev in evs.items():
        row = rows[ev["event_id"]]
        assert row["status"] == "tagged" and refused[uri] in (row["image_error"] or ""), (uri, row)
        assert len(main_stack.db.tags(ev["product_id"])) == tag_count
    assert listener.accepted == 0  # the loopback host was never connected to
    assert not [p for p in s3.front.requests[seen:] if "other-bucket" in p]
