"""Out-of-domain products through a real worker: nothing applied, and the product and its tags say why."""

from __future__ import annotations

import json

from tests.workers.stack import Images, Stack, event


def test_junk_is_stored_with_its_novelty_and_nothing_applied(main_stack: Stack, images: Images) -> None:
    rec = images.records[0]
    junk = event(title="👗👠🔥✨")
    chinese = event(title="兰蔻小黑瓶精华肌底液 50ml 修护")
    normal = event(title=rec.text, image_uri=images.file_uri(rec.id))
    main_stack.publish(junk, chinese, normal)
    main_stack.db.wait_events([e["event_id"] for e in (junk, chinese, normal)], 60)

    for ev in (junk, chinese):
        product = main_stack.db.product(ev["product_id"])
        assert product is not None and product["novelty"] >= 1.0, ev["title"]
        assert "title" in product["novelty_reason"]
        rows = main_stack.db.rows("SELECT status, reason FROM product_tags WHERE product_id = :p",
                                  p=ev["product_id"])
        assert rows and {(r["status"], r["reason"]) for r in rows} == {("review", "out_of_domain")}

    product = main_stack.db.product(normal["product_id"])
    assert product is not None and product["novelty"] < 1.0 and product["novelty_reason"] is None
    # In domain: held back, if at all, by its scores alone (a 200-product model has too little
    # evidence to auto-apply anything under the precision guarantee).
    rows = main_stack.db.rows("SELECT reason, evidence FROM product_tags WHERE product_id = :p",
                              p=normal["product_id"])
    assert {r["reason"] for r in rows} == {None}
    # Each tag carries its evidence: the input shares, and with a title and a photo what each
    # alone would have said.
    for r in rows:
        ev = r["evidence"] if isinstance(r["evidence"], dict) else json.loads(r["evidence"])
        assert abs(ev["shares"]["title"] + ev["shares"]["photo"] - 1) < 1e-3
        assert {"value", "score"} <= set(ev["title_only"]) and {"value", "score"} <= set(ev["photo_only"])
