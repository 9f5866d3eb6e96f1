"""The metric helpers in shared.metrics, checked through the default Prometheus registry."""

from __future__ import annotations

from prometheus_client import REGISTRY

from shared import metrics


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_observe_batch() -> None:
    count, le4 = _value("tagger_batch_size_count"), _value("tagger_batch_size_bucket", le="4.0")
    infer = _value("tagger_stage_seconds_sum", stage="infer")
    metrics.observe_batch(3, {"fetch": 0.01, "decode": 0.02, "encode": 0.2, "head": 0.02, "write": 0.05,
                               "infer": 0.25})
    assert _value("tagger_batch_size_count") == count + 1
    assert _value("tagger_batch_size_bucket", le="4.0") == le4 + 1
    assert abs(_value("tagger_stage_seconds_sum", stage="infer") - infer - 0.25) < 1e-9
    assert _value("tagger_stage_seconds_count", stage="write") >= 1


def test_failures_by_reason() -> None:
    before = _value("tagger_failures_total", reason="image")
    metrics.count_failure("image", 2)
    metrics.count_failure("image", 0)
    assert _value("tagger_failures_total", reason="image") == before + 2


def test_live_model_keeps_only_the_current_version() -> None:
    metrics.set_live_model("v1")
    metrics.set_live_model("v2")
    assert _value("tagger_live_model", version="v2") == 1
    assert REGISTRY.get_sample_value("tagger_live_model", {"version": "v1"}) is None


def test_ingest_and_queue_depth() -> None:
    accepted, rejected = _value("tagger_events_accepted_total"), _value("tagger_events_rejected_total")
    metrics.count_ingest(3, 1)
    assert _value("tagger_events_accepted_total") == accepted + 3
    assert _value("tagger_events_rejected_total") == rejected + 1
    metrics.set_queue_depth("tagging", 7)
    assert _value("tagger_queue_depth", queue="tagging") == 7


def test_worker_server_off_without_port() -> None:
    assert metrics.start_worker_server(None) is None
    assert metrics.start_worker_server("") is None
    assert metrics.start_worker_server("not-a-port") is None


def test_cpu_threads_setting() -> None:
    import torch

    from shared.ml.device import set_cpu_threads

    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(0) == before  # 0 keeps torch's default
        assert set_cpu_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
