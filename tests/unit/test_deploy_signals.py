"""The metric queries the Kubernetes objects read: the expressions the issue and upstream give, word for
word, and the selectors a scrape is matched with."""

from __future__ import annotations

from swallow_trt.deploy import signals


def test_queue_compute_ratio_is_the_tutorials_rule() -> None:
    # triton-inference-server/tutorials TensorRT-LLM_Autoscaling_and_Load_Balancing/
    # triton-metrics_prometheus-rule.yaml at e8489525
    assert signals.QUEUE_COMPUTE_RATIO.record == "triton:queue_compute:ratio"
    assert signals.QUEUE_COMPUTE_RATIO.expr == (
        "rate(nv_inference_queue_duration_us[1m])/clamp_min(rate(nv_inference_compute_infer_duration_us[1m]),1)"
    )


def test_waiting_gauge_reads_the_waiting_request_type() -> None:
    assert 'nv_trt_llm_request_metrics{request_type="waiting"}' in signals.WAITING.expr
    assert signals.WAITING.reads == (signals.WAITING_REQUESTS,)


def test_picker_specs_are_upstreams_triton_tensorrt_llm_engine() -> None:
    # llm-d-router v0.10.0 pkg/epp/framework/plugins/datalayer/extractor/metrics/factories.go
    assert signals.PICKER.engine_config() == {
        "name": "triton-tensorrt-llm",
        "queuedRequestsSpec": "nv_trt_llm_request_metrics{request_type=waiting}",
        "runningRequestsSpec": "nv_trt_llm_request_metrics{request_type=scheduled}",
        "kvUsageSpec": "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=fraction}",
        "cacheBlockSizeSpec": "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=tokens_per}",
        "cacheNumBlocksSpec": "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=max}",
    }


def test_scraped_selectors_cover_every_reader_once() -> None:
    scraped = signals.scraped_selectors()
    assert len(scraped) == len(set(scraped)) == 7
    for rule in signals.RECORDING_RULES:
        assert set(rule.reads) <= set(scraped)
    assert set(signals.PICKER.reads) <= set(scraped)
    assert set(signals.STATIC) <= set(scraped)


def test_selector_matching_and_rendering() -> None:
    sel = signals.KV_FRACTION
    assert sel.matches("nv_trt_llm_kv_cache_block_metrics", {"kv_cache_block_type": "fraction", "model": "x"})
    assert not sel.matches("nv_trt_llm_kv_cache_block_metrics", {"kv_cache_block_type": "max"})
    assert not sel.matches("nv_trt_llm_request_metrics", {"kv_cache_block_type": "fraction"})
    assert (
        sel.promql({"pod": "p"})
        == 'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",pod="p"}'
    )
    assert signals.QUEUE_DURATION.promql() == "nv_inference_queue_duration_us"


def test_adapter_and_keda_queries_name_the_recorded_series() -> None:
    rules = signals.adapter_rules()
    assert [r["name"] for r in rules] == [
        {"matches": "^triton:queue_compute:ratio$", "as": "triton:queue_compute:ratio"},
        {"matches": "^triton:trt_llm_waiting_requests:sum$", "as": "triton:trt_llm_waiting_requests:sum"},
    ]
    query = signals.keda_query(signals.QUEUE_COMPUTE_RATIO, "llm", "swallow-.*")
    assert query == 'sum(max by (pod) (triton:queue_compute:ratio{namespace="llm",pod=~"swallow-.*"}))'
