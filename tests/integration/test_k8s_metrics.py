"""The metrics the Kubernetes objects scale and route on exist on a live server and move with load.

A repository whose ``tensorrt_llm`` model is the reference backend, with a KV cache of 8 blocks of 16
tokens (``max_tokens_in_paged_kv_cache``), is served by the real Triton server on CPU. Six concurrent
streams of 4 + 60 tokens each need 4 blocks, so two run at a time and the others wait for blocks, as
under the C++ backend's guaranteed_no_evict scheduler. Triton's ``/metrics`` is scraped before, during
and after the load, and every raw series that ``swallow_trt.deploy.signals`` says the PrometheusRule,
the autoscalers' queries and the endpoint picker read is found there with the selector the manifests
use, evaluated here on the scraped text; each one that is not configuration moves with the load and
comes back after it, and the values keep the C++ backend's meanings (waiting = active - scheduled,
free + used = max, fraction = used / max)."""

from __future__ import annotations

import queue
import re
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("torch")
pytest.importorskip("prometheus_client")

from swallow_trt.deploy import signals
from swallow_trt.triton_repo.server import TritonServer
from tests.fixtures.triton import serving

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]

TOKENS_PER_BLOCK = 16
KV_BLOCKS = 8
PROMPT_LEN, OUTPUT_LEN = 4, 60  # 64 tokens: 4 blocks, so two sequences fill the cache
STREAMS = 6
RUNNING_AT_ONCE = KV_BLOCKS // -(-(PROMPT_LEN + OUTPUT_LEN) // TOKENS_PER_BLOCK)
MODEL = {"model": "tensorrt_llm", "version": "1"}
Sample = tuple[str, dict[str, str], float]


def kv_limited_repo(root: Path) -> Path:
    """The shipped repository of a tiny random Llama-3.1, reduced to its ``tensorrt_llm`` model (the
    metrics are that model's), with a KV cache of KV_BLOCKS blocks of TOKENS_PER_BLOCK tokens."""
    from swallow_trt.triton_repo.configs import from_pbtxt, to_pbtxt
    from swallow_trt.triton_repo.repo import RepoSpec, write_repo
    from tests.fixtures.tiny import make_checkpoint, make_tokenizer

    ckpt = make_checkpoint(root / "ckpt", "llama31", vocab_size=len(make_tokenizer("llama31")))
    spec = RepoSpec(checkpoint=ckpt, chat_format="llama3", end_id=None, max_input_len=64, max_batch_size=8)
    repo = write_repo(spec, root / "repo")
    for model in repo.iterdir():
        if model.is_dir() and model.name != "tensorrt_llm":
            shutil.rmtree(model)
    path = repo / "tensorrt_llm" / "config.pbtxt"
    config = from_pbtxt(path.read_text(encoding="utf-8"))
    config.parameters["max_tokens_in_paged_kv_cache"].string_value = str(KV_BLOCKS * TOKENS_PER_BLOCK)
    config.parameters["tokens_per_block"].string_value = str(TOKENS_PER_BLOCK)
    path.write_text(to_pbtxt(config), encoding="utf-8")
    return repo


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("k8s-metrics")
    with serving(kv_limited_repo(root), root / "server.log", timeout_s=600) as served:
        yield served


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(server: TritonServer) -> list[Sample]:
    """Every sample on Triton's metrics port, with the names Prometheus stores (prometheus_client's
    parser would add ``_total`` to Triton's counters, which Prometheus does not do)."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode("utf-8")
    samples = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match is not None, line
            name, labels, number = match.groups()
            samples.append((name, dict(LABEL.findall(labels or "")), float(number)))
    return samples


def kinds(server: TritonServer) -> dict[str, str]:
    """Each family's type, as prometheus_client's parser reads the same text."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode("utf-8")
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def select(samples: list[Sample], selector: signals.Selector) -> list[float]:
    """The values of the tensorrt_llm model's series that ``selector`` reads."""
    return [
        v for name, labels, v in samples if selector.matches(name, labels) and labels.items() >= MODEL.items()
    ]


def value(samples: list[Sample], selector: signals.Selector) -> float:
    values = select(samples, selector)
    assert len(values) == 1, f"{selector.promql()}: {len(values)} series for the tensorrt_llm model"
    return values[0]


def gauge(samples: list[Sample], request_type: str = "", kv: str = "") -> float:
    """One of the families' other gauges (those no manifest reads), to check the meanings."""
    if request_type:
        return value(
            samples, signals.Selector("nv_trt_llm_request_metrics", (("request_type", request_type),))
        )
    return value(
        samples, signals.Selector("nv_trt_llm_kv_cache_block_metrics", (("kv_cache_block_type", kv),))
    )


def stream(server: TritonServer, first_id: int) -> list[int]:
    """One streamed tensorrt_llm request of PROMPT_LEN + OUTPUT_LEN tokens; its generated ids."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    values = {
        "input_ids": [list(range(first_id, first_id + PROMPT_LEN))],
        "input_lengths": [[PROMPT_LEN]],
        "request_output_len": [[OUTPUT_LEN]],
        "streaming": [[True]],
    }
    inputs = []
    for name, rows in values.items():
        arr = np.array(rows, dtype=bool if name == "streaming" else np.int32)
        inputs.append(grpcclient.InferInput(name, list(arr.shape), "BOOL" if arr.dtype == bool else "INT32"))
        inputs[-1].set_data_from_numpy(arr)
    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    client.async_stream_infer("tensorrt_llm", inputs, enable_empty_final_response=True)
    ids: list[int] = []
    try:
        while True:
            result, error = results.get(timeout=120)
            assert error is None, error
            out = result.as_numpy("output_ids")
            if out is not None:
                ids += out.reshape(-1).tolist()
            if result.get_response().parameters["triton_final_response"].bool_param:
                return ids
    finally:
        client.stop_stream()
        client.close()


def settled(server: TritonServer, deadline_s: float = 10) -> list[Sample]:
    """A scrape once the in-flight batcher reports no active request. It publishes at most every 100 ms,
    one gauge after the other and ``active`` first: the scrape is taken a moment after ``active`` is 0."""
    end = time.monotonic() + deadline_s
    while gauge(scrape(server), request_type="active") != 0 and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.2)
    return scrape(server)


def test_every_scaled_and_routed_series_exists_and_moves_with_load(server: TritonServer) -> None:
    rules = signals.RECORDING_RULES
    read = {*signals.PICKER.reads, *(s for rule in rules for s in rule.reads)}
    assert set(signals.scraped_selectors()) == read
    # Each rule's expression names only series it declares it reads (so checking `reads` checks it).
    for rule in rules:
        assert set(re.findall(r"\bnv_[a-z_]+", rule.expr)) == {s.metric for s in rule.reads}, rule.expr

    # Triton makes a model's nv_inference_* series at its first request; the backend's gauges exist
    # from the model's load.
    before = settled(server)
    missing = [s.promql() for s in read if not select(before, s) and s.metric.startswith("nv_trt_llm_")]
    assert missing == [], f"no series on {server.metrics_url} for {missing} before any request"

    outputs: list[list[int] | BaseException] = []

    def one(i: int) -> None:
        try:
            outputs.append(stream(server, 100 + 7 * i))
        except BaseException as exc:  # asserted below
            outputs.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(STREAMS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    during: list[list[Sample]] = []
    while any(t.is_alive() for t in threads):
        during.append(scrape(server))
        time.sleep(0.05)
    for t in threads:
        t.join()
    load_s = time.monotonic() - t0
    after = settled(server)
    time.sleep(1.0)
    idle = scrape(server)

    assert [len(o) if isinstance(o, list) else repr(o) for o in outputs] == [OUTPUT_LEN] * STREAMS
    missing = [s.promql() for s in read if not select(after, s)]
    assert missing == [], f"no series on {server.metrics_url} for {missing} after load"
    print(f"load: {STREAMS} streams in {load_s:.2f} s, {len(during)} scrapes during it")

    # The C++ backend's kinds: its families are gauges; Triton's durations are counters.
    types = kinds(server)
    assert {types[s.metric] for s in read if s.metric.startswith("nv_trt_llm_")} == {"gauge"}
    assert types[signals.QUEUE_DURATION.metric] == types[signals.COMPUTE_DURATION.metric] == "counter"

    # Configuration: constant, and what the repository configured.
    for selector, want in (
        (signals.KV_TOKENS_PER_BLOCK, TOKENS_PER_BLOCK),
        (signals.KV_MAX_BLOCKS, KV_BLOCKS),
    ):
        assert selector in signals.STATIC
        assert {value(s, selector) for s in [before, *during, after]} == {want}, selector.promql()

    # Gauges: at rest before and after, above it at some point of the load, and within what the
    # scheduler allows at every scrape (a scrape may fall between two gauges' updates, so only bounds
    # that hold for each gauge alone are checked there).
    gauges = [s for s in read if s not in signals.STATIC and s.metric.startswith("nv_trt_llm_")]
    for selector in gauges:
        peak = max(value(s, selector) for s in during)
        assert value(before, selector) == value(after, selector) == 0, selector.promql()
        assert peak > 0, f"{selector.promql()} never moved under load"
    for samples in during:
        assert 0 <= value(samples, signals.WAITING_REQUESTS) <= STREAMS - 1
        assert 0 <= value(samples, signals.SCHEDULED_REQUESTS) <= RUNNING_AT_ONCE
        assert 0 <= value(samples, signals.KV_FRACTION) <= 1
    assert max(value(s, signals.SCHEDULED_REQUESTS) for s in during) == RUNNING_AT_ONCE
    assert max(value(s, signals.WAITING_REQUESTS) for s in during) >= STREAMS - 2 * RUNNING_AT_ONCE

    # The C++ backend's meanings, on settled scrapes (model_instance_state.cc WaitForStats).
    for samples in (before, after):
        assert gauge(samples, "waiting") == gauge(samples, "active") - gauge(samples, "scheduled")
        assert gauge(samples, kv="free") + gauge(samples, kv="used") == gauge(samples, kv="max")
        assert gauge(samples, kv="fraction") == gauge(samples, kv="used") / gauge(samples, kv="max")
        assert gauge(samples, "max") == 8  # max_batch_size

    # Triton's counters: they grow under load and stand still at rest; the recorded ratio (rate of
    # queue time over the rate of compute time, the compute rate clamped at 1) over the load's window
    # is defined and over a window at rest is 0, as Prometheus would compute it from these scrapes.
    def counter(samples: list[Sample], selector: signals.Selector) -> float:
        return value(samples, selector) if select(samples, selector) else 0.0  # not made yet: 0

    for selector in (signals.QUEUE_DURATION, signals.COMPUTE_DURATION):
        assert counter(after, selector) > counter(before, selector), selector.promql()
        assert counter(idle, selector) == counter(after, selector), selector.promql()

    def ratio(a: list[Sample], b: list[Sample], seconds: float) -> float:
        queued = (counter(b, signals.QUEUE_DURATION) - counter(a, signals.QUEUE_DURATION)) / seconds
        computed = (counter(b, signals.COMPUTE_DURATION) - counter(a, signals.COMPUTE_DURATION)) / seconds
        return queued / max(computed, 1)

    assert ratio(before, after, load_s) > 0
    assert ratio(after, idle, 1.0) == 0
    # The waiting rule sums the waiting gauge per pod: one series here, so its peak is the gauge's.
    assert signals.WAITING.reads == (signals.WAITING_REQUESTS,)
