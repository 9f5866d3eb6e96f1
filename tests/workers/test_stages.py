"""Sub-batches inside a tagging batch (workers.stages): the same predictions with the overlap on as
off, on the CPU with the shipped model and real files; and the stage helper's ordering and errors."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.events import ProductUploaded
from shared.fetch import ImageFetcher
from shared.ml.dataset import load_manifest, load_records, read_images
from workers.stages import default_sub_batch, overlapped, split
from workers.tagging import Runtime, infer, use_stages


def test_split() -> None:
    assert split(10, 0) == [slice(0, 10)]
    assert split(10, 10) == split(10, 32) == [slice(0, 10)]
    assert split(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert split(0, 4) == [slice(0, 0)]


def test_default_sub_batch_is_off_on_the_cpu() -> None:
    import torch

    assert default_sub_batch(torch.device("cpu"), 32) == 0
    assert default_sub_batch("cpu", 32) == 0
    assert default_sub_batch(torch.device("cuda"), 32) == 16
    assert default_sub_batch(torch.device("cuda", 0), 256) == 64


def test_overlapped_prepares_the_next_part_while_the_caller_works() -> None:
    started: dict[int, float] = {}
    consumed: dict[int, float] = {}

    def prepare(k: int) -> int:
        started[k] = time.monotonic()
        time.sleep(0.05)
        return k * 10

    with ThreadPoolExecutor(1) as pool:
        out = []
        for k, result in enumerate(overlapped([0, 1, 2], prepare, pool)):
            consumed[k] = time.monotonic()
            time.sleep(0.1)  # "the model": meanwhile part k+1 is being prepared
            out.append(result)
    assert out == [0, 10, 20]
    assert started[1] < consumed[0] + 0.1 and started[2] < consumed[1] + 0.1  # began during the work


def test_overlapped_raises_a_failed_part_in_order_and_leaves_nothing_running() -> None:
    done: list[int] = []

    def prepare(k: int) -> int:
        if k == 1:
            raise ValueError("part 1 failed")
        time.sleep(0.05)
        done.append(k)
        return k

    with ThreadPoolExecutor(1) as pool:
        got = []
        with pytest.raises(ValueError, match="part 1 failed"), \
                closing(overlapped([0, 1, 2], prepare, pool)) as it:
            for r in it:
                got.append(r)
        assert got == [0]
        # The caller leaving mid-way: the part in flight is cancelled or finished once it is closed.
        with closing(overlapped([3, 4, 5], prepare, pool)) as it:
            assert next(it) == 3
        after_close = list(done)
        time.sleep(0.15)
        assert done == after_close and 5 not in done


def test_without_pool_everything_runs_in_the_callers_thread() -> None:
    names = []
    list(overlapped([1, 2], lambda k: names.append(threading.current_thread().name), None))
    assert names == [threading.current_thread().name] * 2


# --- the worker's inference, staged vs in one piece -------------------------------------------


@pytest.fixture(scope="module")
def shipped_tagger(settings: Settings) -> Any:
    from shared.ml.predictor import Tagger

    return Tagger.load(settings=settings)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory, sample_manifest: Path) -> list[ProductUploaded]:
    """Sample products with their photos as files, plus the cases that must stay per item: a missing
    file, a file that is not an image, no photo at all."""
    folder = tmp_path_factory.mktemp("photos")
    m = load_manifest(sample_manifest)
    recs = [r for r in load_records(m) if r.image_ref][:17]
    found = read_images(m, [r.image_ref for r in recs])
    out = []
    for n, r in enumerate(recs):
        path = folder / f"{n}.jpg"
        path.write_bytes(found[r.image_ref])
        out.append((r.text or "untitled", path.as_uri()))
    (folder / "junk.jpg").write_bytes(b"not a photo at all")
    out += [("Blue denim jacket", (folder / "missing.jpg").as_uri()),
            ("Red cotton kurta", (folder / "junk.jpg").as_uri()), ("Black leather belt", None)]
    return [ProductUploaded(event_id=f"e{n}", product_id=f"p{n}", seller_id="s", title=title, image_uri=uri,
                            occurred_at="2025-06-01T10:00:00+00:00") for n, (title, uri) in enumerate(out)]


def _shape(outcomes: list[tuple[Any, str | None]]) -> list[Any]:
    return [(p.error, p.modalities, error, p.abstain_reason, sorted(p.disagreements),
             {a: [(t.value, t.status) for t in ranked] for a, ranked in p.tags.items()})
            for p, error in outcomes]


def test_staged_inference_gives_the_same_predictions(
    shipped_tagger: Any, events: list[ProductUploaded], settings: Settings,
) -> None:
    s = settings.model_copy(update={"allow_file_uris": True})
    rt = Runtime(settings=s, tagger=shipped_tagger, fetcher=ImageFetcher(s))
    whole = infer(rt, events, shipped_tagger)
    use_stages(rt, 6)  # 20 events: sub-batches of 6, 6, 6, 2
    try:
        assert len(split(len(events), rt.sub_batch)) == 4
        staged = infer(rt, events, shipped_tagger)
    finally:
        assert rt.stage_pool is not None
        rt.stage_pool.shutdown()
    assert _shape(staged) == _shape(whole)
    for (a, _), (b, _) in zip(whole, staged, strict=True):
        for axis, ranked in a.tags.items():
            assert [t.score for t in ranked] == pytest.approx([t.score for t in b.tags[axis]], abs=1e-4)
    errors = [e for _, e in staged]
    assert errors[:17] == [None] * 17
    assert errors[17] and errors[18] and errors[19] is None  # missing file, not an image, no photo
    assert errors == [e for _, e in whole]
    assert staged[19][0].modalities == ("text",) and staged[18][0].modalities == ("text",)
