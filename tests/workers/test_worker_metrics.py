"""A real worker's Prometheus endpoint (TAGGER_METRICS_PORT): every tagging stage is timed."""

from __future__ import annotations

import urllib.request

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
