"""A real worker's Prometheus endpoint (TAGGER_METRICS_PORT): every tagging stage is timed."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from shared.metrics import STAGES
from tests.workers.stack import Images, Stack, event, processed, wait_processed


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_worker_reports_batch_size_each_stage_and_live_model(main_stack: Stack, images: Images) -> None:
    port = int(main_stack.worker.env["TAGGER_METRICS_PORT"])
    rec = images.records[0]
    before = processed(main_stack)
    main_stack.publish(event(title=rec.text, image_uri=images.file_uri(rec.id)))
    wait_processed(main_stack, before + 1)

    samples = scrape(port)
    assert samples[("tagger_batch_size_count", ())] >= 1
    for stage in STAGES:  # fetch, decode, encode, head, write and infer (fetch..head)
        assert samples[("tagger_stage_seconds_count", (("stage", stage),))] >= 1, stage
        assert samples[("tagger_stage_seconds_sum", (("stage", stage),))] > 0, stage
    live = [labels for (name, labels), v in samples.items() if name == "tagger_live_model" and v == 1]
    assert len(live) == 1 and live[0][0][0] == "version"


def test_worker_estimates_accuracy_without_labels(main_stack: Stack, images: Images) -> None:
    """After enough items, each single-label axis has a label-free estimate beside the accuracy the
    model measured at training time, and the alert margin is exported for the alert rule."""
    port = int(main_stack.worker.env["TAGGER_METRICS_PORT"])
    before = processed(main_stack)
    records = (images.records * 2)[:60]
    main_stack.publish(*(event(title=r.text, image_uri=images.file_uri(r.id)) for r in records))
    wait_processed(main_stack, before + len(records))

    samples = scrape(port)
    manifest = json.loads((Path(main_stack.worker.env["TAGGER_MODEL_DIR"]) / "manifest.json").read_text())
    single = [axis for axis, spec in manifest["axes"].items() if spec["kind"] == "single"]
    for axis in single:
        reference = samples[("tagger_reference_accuracy", (("axis", axis),))]
        assert reference == manifest["metrics"]["modalities"]["both"][axis]["accuracy"]
        assert 0.0 < samples[("tagger_estimated_accuracy", (("axis", axis),))] <= 1.0, axis
    assert samples[("tagger_accuracy_alert_margin", ())] == 0.03
