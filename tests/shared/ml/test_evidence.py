"""Each tag's evidence: input shares from the gate, single-input predictions, and disagreement."""

from __future__ import annotations

import numpy as np
import pytest

from shared.config import Settings
from shared.ml.dataset import load_manifest, load_records, read_images
from shared.ml.evaluation import evaluate_probs
from shared.ml.evidence import Evidence, alone_axes, fit_trust
from shared.ml.labels import Axis
from shared.ml.predictor import AUTO, Item, Tagger


@pytest.fixture(scope="module")
def shipped(settings: Settings) -> Tagger:
    return Tagger.load(settings=settings)


@pytest.fixture(scope="module")
def sample(sample_manifest):
    m = load_manifest(sample_manifest)
    recs = load_records(m)
    imgs = read_images(m, [r.image_ref for r in recs])
    return recs, [imgs[r.image_ref] for r in recs]


def test_every_tag_has_its_input_shares(shipped: Tagger, sample) -> None:
    recs, blobs = sample
    preds = shipped.predict([Item(r.text, b) for r, b in zip(recs[:20], blobs[:20], strict=True)]
                            + [Item(recs[0].text)])
    for p in preds[:-1]:
        for a in shipped.axes:
            ev = p.evidence[a.name]
            assert ev["shares"]["title"] + ev["shares"]["photo"] == pytest.approx(1, abs=2e-4)
            assert {"title_only", "photo_only"} <= set(ev)
    title_only = preds[-1]
    for a in shipped.axes:  # one input: all of the share, and nothing to disagree with
        assert title_only.evidence[a.name] == {"shares": {"title": 1.0, "photo": 0.0}}
    assert title_only.disagreements == []


def test_a_photo_of_another_product_sends_the_axes_it_contradicts_to_review(shipped: Tagger, sample) -> None:
    recs, blobs = sample
    # Each title with the photo of another product (a seller's wrong photo), against the right one.
    wrong = shipped.predict([Item(r.text, blobs[(k + 97) % len(recs)]) for k, r in enumerate(recs)])
    right = shipped.predict([Item(r.text, b) for r, b in zip(recs, blobs, strict=True)])
    axes = {a.name: a for a in shipped.axes}
    assert shipped.trusted  # the shipped model trusts both inputs on at least one axis
    n_wrong = sum(bool(p.disagreements) for p in wrong)
    n_right = sum(bool(p.disagreements) for p in right)
    assert n_wrong >= 40 and n_right <= 0.05 * len(recs), (n_wrong, n_right)
    for p in wrong:
        if not p.disagreements:
            continue
        # Nothing about the item is applied, and the axes named carry both answers.
        assert all(t.status != AUTO for ranked in p.tags.values() for t in ranked)
        for axis in p.disagreements:
            assert axis in shipped.trusted
            ev = p.evidence[axis]
            assert ev["title_only"]["value"] != ev["photo_only"]["value"]
            for key in ("title_only", "photo_only"):  # each alone would have applied its value
                assert ev[key]["score"] >= axes[axis].threshold(ev[key]["value"]) - 1e-4


def _axis() -> Axis:
    return Axis(name="colour", kind="single", values=["Red", "Blue"])


def test_disagreement_needs_both_inputs_each_sure_enough_to_apply_alone() -> None:
    a = _axis()
    a.thresholds = {"Red": 0.85, "Blue": 0.7}
    title = np.array([[.9, .1], [.9, .1], [.9, .1], [.2, .8], [.8, .2]])
    photo = np.array([[.2, .8], [.2, .8], [.95, .05], [.9, .1], [.1, .9]])
    photo_ok = np.array([True, False, True, True, True])
    has = np.ones(5, bool)
    ev = Evidence([a], None, {"colour": title}, {"colour": photo}, has, photo_ok, frozenset({"colour"}))
    # 0: both apply, different -> yes; 1: no photo -> no; 2: agree -> no;
    # 3: Blue .8 >= .7 and Red .9 >= .85 -> yes; 4: title's Red .8 < .85 -> no
    assert ev.disagreements()["colour"].tolist() == [True, False, False, True, False]
    assert ev.held().tolist() == [True, False, False, True, False]
    untrusted = Evidence([a], None, {"colour": title}, {"colour": photo}, has, photo_ok)
    assert not untrusted.held().any()  # an input not trusted alone on the axis never disagrees


def test_trust_needs_each_input_alone_to_reach_the_target() -> None:
    a = _axis()
    a.thresholds = {"Red": 0.8, "Blue": 0.8}
    n = 400
    y = np.zeros(n, int)  # all Red
    title = np.tile([.95, .05], (n, 1))  # always right, sure
    photo = np.tile([.95, .05], (n, 1))
    photo[:40] = [.1, .9]  # sure and wrong on 10%
    ev = Evidence([a], None, {"colour": title}, {"colour": photo}, np.ones(n, bool), np.ones(n, bool))
    table = fit_trust(ev, {"colour": y}, target=0.98, confidence=0.95)
    row = table["axes"]["colour"]
    assert (row["title"]["n"], row["title"]["hits"]) == (n, n) and row["title"]["lower"] > 0.99
    assert (row["photo"]["n"], row["photo"]["hits"]) == (n, n - 40) and not row["trusted"]
    photo[:40] = [.95, .05]
    assert fit_trust(ev, {"colour": y}, 0.98, 0.95)["axes"]["colour"]["trusted"]


def test_evaluation_withholds_and_counts_disagreements() -> None:
    a = _axis()
    a.thresholds = {"Red": 0.5, "Blue": 0.5}
    probs = {"colour": np.array([[.9, .1], [.9, .1], [.1, .9]])}
    y = {"colour": np.array([0, 1, 1])}
    before = evaluate_probs([a], probs, y)["colour"]
    after = evaluate_probs([a], probs, y, withheld={"colour": np.array([False, True, False])})["colour"]
    assert (before["auto_coverage"], before["auto_precision"]) == (1.0, pytest.approx(2 / 3, abs=1e-4))
    assert (after["auto_coverage"], after["auto_precision"]) == (pytest.approx(2 / 3, abs=1e-4), 1.0)
    assert (before["withheld"], after["withheld"]) == (0, 1)


def test_one_input_applies_only_where_that_input_alone_reached_the_target() -> None:
    a, b = _axis(), Axis(name="type", kind="single", values=["Shoe", "Bag"])
    def row(title: float, photo: float) -> dict:
        return {"title": {"n": 500, "hits": 0, "lower": title},
                "photo": {"n": 500, "hits": 0, "lower": photo}, "trusted": False}

    table = {"target": 0.98, "axes": {"colour": row(0.94, 0.99), "type": row(0.994, 0.92)}}
    alone = alone_axes(table)
    assert alone == {"title": frozenset({"type"}), "photo": frozenset({"colour"})}
    probs = {"colour": np.tile([.9, .1], (3, 1)), "type": np.tile([.9, .1], (3, 1))}
    ev = Evidence([a, b], None, probs, probs, np.array([True, True, False]), np.array([True, False, True]),
                  alone=alone)
    one = ev.one_input()  # item 0 has both; 1 only a title; 2 only a photo
    assert one["colour"].tolist() == [False, True, False] and one["type"].tolist() == [False, False, True]
    assert ev.withheld()["colour"].tolist() == [False, True, False]
    # A catalogue of one input (no item had both): no table, no limit.
    empty = {k: {"n": 0, "hits": 0, "lower": 0.0} for k in ("title", "photo")}
    assert alone_axes({"target": 0.98, "axes": {"colour": {**empty, "trusted": False}}}) is None
    assert alone_axes(None) is None


def test_a_title_whose_photo_failed_applies_only_what_the_title_alone_may(shipped: Tagger) -> None:
    (p,) = shipped.predict([Item("Nike Men Navy Blue Running Sports Shoes")])
    assert shipped.alone is not None and p.one_input
    for a in shipped.axes:
        statuses = {t.status for t in p.tags[a.name]}
        if a.name in p.one_input:
            assert a.name not in shipped.alone["title"] and statuses == {"review"}


def test_solo_opinions_are_scored_only_for_items_with_both_inputs(shipped: Tagger, sample) -> None:
    """A mixed batch (both inputs, title only, photo only) gives each item with both inputs the
    solo opinions it gets in a batch of its own kind, zeros elsewhere; the gates read without the
    axes' MLPs are the gates of the full pass."""
    import torch

    from shared.ml.evidence import input_evidence

    recs, blobs = sample
    items = [Item(r.text, b) for r, b in zip(recs[:12], blobs[:12], strict=True)]
    mixed = items[:4] + [Item(r.text) for r in recs[4:8]] + [Item("", b) for b in blobs[8:12]]
    tx, tm, ix, im = shipped.features(mixed)[:4]
    assert tm.dtype == bool and im.dtype == bool and (tm & im).sum() == 4
    ev = input_evidence(shipped.head, shipped.axes, tx, tm, ix, im, shipped.device)
    alone = input_evidence(shipped.head, shipped.axes, tx[:4], tm[:4], ix[:4], im[:4], shipped.device)
    for a in shipped.axes:
        for got, want in ((ev.title, alone.title), (ev.photo, alone.photo)):
            np.testing.assert_allclose(got[a.name][:4], want[a.name], rtol=1e-5, atol=1e-6)
            assert not got[a.name][4:].any()
    with torch.inference_mode():
        args = [torch.from_numpy(x) for x in (tx, tm, ix, im)]
        member = shipped.head.members[0] if hasattr(shipped.head, "members") else shipped.head
        _, full_gates = member._gated(*member._views(*args, None, None))
        only_gates = member.gate_weights(*args)
    for a in shipped.axes:
        torch.testing.assert_close(only_gates[a.name], full_gates[a.name])
