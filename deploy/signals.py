"""Every metric the Kubernetes objects scale and route on, in one place.

The manifests (PrometheusRule, prometheus-adapter rules, KEDA triggers, the endpoint picker's engine
config) are built from these definitions, and the integration test that scrapes a live server imports
them to check that every raw series they read exists there and moves with load.

Sources (read at the commits named):
- ``triton:queue_compute:ratio`` and its expression: triton-inference-server/tutorials,
  Deployment/Kubernetes/TensorRT-LLM_Autoscaling_and_Load_Balancing/triton-metrics_prometheus-rule.yaml
  at e84895253165a887db5e25cd69d24def7a90b1ee (HPA ``type: Pods``/``AverageValue`` 1000m in its
  chart/templates/horizontal-pod-autoscaler.yaml).
- the picker's ``triton-tensorrt-llm`` engine specs: llm-d/llm-d-router v0.10.0
  (71f4f0999f95b96c49a9d0c4afbd18dfdb943c26),
  pkg/epp/framework/plugins/datalayer/extractor/metrics/factories.go (defaultEngineConfigs); the spec
  syntax ``name{label=value}`` from spec.go there; the scrape-port override (``port``) of the
  ``metrics-data-source`` plugin from pkg/epp/framework/plugins/datalayer/source/metrics/datasource.go.

Pure data and string building: no imports beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Triton's metrics port, named ``metrics`` on the pods and the Services; every raw series below is
# scraped there (the C++ tensorrtllm backend publishes its nv_trt_llm_* families on it, and the
# reference backend publishes the same names through the Python backend's custom-metrics API).
METRICS_PORT = 8002
METRICS_PORT_NAME = "metrics"
METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class Selector:
    """One raw series family and the label values it is filtered on (an instant-vector selector)."""

    metric: str
    labels: tuple[tuple[str, str], ...] = ()

    def promql(self, extra: dict[str, str] | None = None) -> str:
        """``name{label="value",...}``; ``extra`` adds exact matchers (namespace, pod)."""
        pairs = [*self.labels, *sorted((extra or {}).items())]
        inner = ",".join(f'{k}="{v}"' for k, v in pairs)
        return f"{self.metric}{{{inner}}}" if inner else self.metric

    def picker_spec(self) -> str:
        """The endpoint picker's spec syntax (llm-d-router spec.go): ``name{label=value,...}``."""
        inner = ",".join(f"{k}={v}" for k, v in self.labels)
        return f"{self.metric}{{{inner}}}" if inner else self.metric

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        """Whether a scraped sample (family name, its labels) is one this selector reads."""
        return name == self.metric and all(labels.get(k) == v for k, v in self.labels)


def _sel(metric: str, **labels: str) -> Selector:
    return Selector(metric, tuple(sorted(labels.items())))


# --- raw series -----------------------------------------------------------------------------------

# Triton core (every backend): cumulative microseconds spent queued / computing, per model.
QUEUE_DURATION = _sel("nv_inference_queue_duration_us")
COMPUTE_DURATION = _sel("nv_inference_compute_infer_duration_us")
# The tensorrtllm backend's request gauges and KV-cache block gauges.
WAITING_REQUESTS = _sel("nv_trt_llm_request_metrics", request_type="waiting")
SCHEDULED_REQUESTS = _sel("nv_trt_llm_request_metrics", request_type="scheduled")
KV_FRACTION = _sel("nv_trt_llm_kv_cache_block_metrics", kv_cache_block_type="fraction")
KV_TOKENS_PER_BLOCK = _sel("nv_trt_llm_kv_cache_block_metrics", kv_cache_block_type="tokens_per")
KV_MAX_BLOCKS = _sel("nv_trt_llm_kv_cache_block_metrics", kv_cache_block_type="max")


# --- Prometheus recording rules (PrometheusRule) --------------------------------------------------


@dataclass(frozen=True)
class RecordingRule:
    record: str
    expr: str
    reads: tuple[Selector, ...]  # the raw series the expression reads
    help: str


QUEUE_COMPUTE_RATIO = RecordingRule(
    record="triton:queue_compute:ratio",
    # Exactly Triton's autoscaling tutorial's rule: time queued over time computing, per series.
    expr=f"rate({QUEUE_DURATION.promql()}[1m])/clamp_min(rate({COMPUTE_DURATION.promql()}[1m]),1)",
    reads=(QUEUE_DURATION, COMPUTE_DURATION),
    help="Time requests spent queued per unit of compute time (Triton's autoscaling tutorial)",
)
WAITING = RecordingRule(
    record="triton:trt_llm_waiting_requests:sum",
    # One series per pod: the in-flight batcher's waiting requests (requests that found no batch slot
    # or KV blocks), summed over the label sets a backend may add.
    expr=f"sum by (namespace, pod) ({WAITING_REQUESTS.promql()})",
    reads=(WAITING_REQUESTS,),
    help="Requests waiting in the tensorrtllm in-flight batcher, per pod",
)
RECORDING_RULES = (QUEUE_COMPUTE_RATIO, WAITING)
RULE_GROUP = "swallow-trt-autoscaling"
RULE_INTERVAL = "6s"  # as the tutorial's group: the HPA sees a fresh value every sync period


# --- what the autoscalers read --------------------------------------------------------------------

# prometheus-adapter rules (its Helm chart's ``rules.custom``): the recorded series become per-pod
# custom metrics of the same name; HPA ``type: Pods`` averages them over the target's pods. The
# ratio is recorded per model: a pod's value is that of its most queued model.
ADAPTER_SUM = "sum by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})"
ADAPTER_METRICS_QUERY = {
    QUEUE_COMPUTE_RATIO.record: "max by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})",
    WAITING.record: ADAPTER_SUM,
}


def adapter_rules(rules: tuple[RecordingRule, ...] = RECORDING_RULES) -> list[dict[str, object]]:
    """prometheus-adapter ``rules.custom`` entries exposing the recorded series per pod."""
    return [
        {
            "seriesQuery": f'{rule.record}{{namespace!="",pod!=""}}',
            "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
            "name": {"matches": f"^{rule.record}$", "as": rule.record},
            "metricsQuery": ADAPTER_METRICS_QUERY.get(rule.record, ADAPTER_SUM),
        }
        for rule in rules
    ]


def keda_query(rule: RecordingRule, namespace: str, pod_regex: str) -> str:
    """A KEDA Prometheus trigger's query: the sum over the target's pods of each pod's value, so
    that KEDA's AverageValue (value / replicas vs threshold) matches the HPA's per-pod average."""
    inner = "max" if rule is QUEUE_COMPUTE_RATIO else "sum"  # as the adapter's metricsQuery
    return f'sum({inner} by (pod) ({rule.record}{{namespace="{namespace}",pod=~"{pod_regex}"}}))'


# --- the endpoint picker --------------------------------------------------------------------------

PICKER_ENGINE = "triton-tensorrt-llm"
PICKER_ENGINE_LABEL = "llm-d.ai/engine-type"


@dataclass(frozen=True)
class PickerEngine:
    """The picker's engineConfigs entry for Triton with the tensorrtllm backend (field names from
    llm-d-router's engineConfigParams); its specs are those upstream ships for this engine."""

    name: str = PICKER_ENGINE
    queued: Selector = WAITING_REQUESTS
    running: Selector = SCHEDULED_REQUESTS
    kv_usage: Selector = KV_FRACTION
    block_size: Selector = KV_TOKENS_PER_BLOCK
    num_blocks: Selector = KV_MAX_BLOCKS
    reads: tuple[Selector, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "reads", (self.queued, self.running, self.kv_usage, self.block_size, self.num_blocks)
        )

    def engine_config(self) -> dict[str, str]:
        return {
            "name": self.name,
            "queuedRequestsSpec": self.queued.picker_spec(),
            "runningRequestsSpec": self.running.picker_spec(),
            "kvUsageSpec": self.kv_usage.picker_spec(),
            "cacheBlockSizeSpec": self.block_size.picker_spec(),
            "cacheNumBlocksSpec": self.num_blocks.picker_spec(),
        }


PICKER = PickerEngine()


# The PyTorch runtime (GPT-OSS): trtllm-serve is the OpenAI server and publishes its own families on
# its port's /metrics; the names are the picker's built-in ``trtllm-serve`` engine (same factories.go).
# Not checkable here: trtllm-serve does not run without TensorRT-LLM and a GPU.
TRTLLM_SERVE_WAITING = _sel("trtllm_num_requests_waiting")
WAITING_TRTLLM_SERVE = RecordingRule(
    record="trtllm:num_requests_waiting:sum",
    expr=f"sum by (namespace, pod) ({TRTLLM_SERVE_WAITING.promql()})",
    reads=(TRTLLM_SERVE_WAITING,),
    help="Requests waiting in trtllm-serve's scheduler, per pod",
)
TRTLLM_SERVE_RULES = (WAITING_TRTLLM_SERVE,)
TRTLLM_SERVE_ENGINE = "trtllm-serve"

# Configuration gauges: constant for a running server (block size, block count). They must exist;
# every other scraped series must move with load.
STATIC = (KV_TOKENS_PER_BLOCK, KV_MAX_BLOCKS)


def scraped_selectors() -> tuple[Selector, ...]:
    """Every raw series any object reads from the metrics port (recording rules and the picker),
    without repeats, in a stable order: what a live server must publish and move under load."""
    seen: dict[Selector, None] = {}
    for rule in RECORDING_RULES:
        seen.update(dict.fromkeys(rule.reads))
    seen.update(dict.fromkeys(PICKER.reads))
    return tuple(seen)
