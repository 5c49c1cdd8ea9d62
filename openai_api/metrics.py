"""The API's Prometheus metrics (prometheus-client), in a registry of the app's own so that several apps
in one process (tests) never share counters. ``process_cpu_seconds_total`` over
``swallow_api_completion_tokens_total`` is the API's CPU time per streamed token
(benchmarks/openai_overhead.py reads both from ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "swallow_api_requests",
            "Requests answered, by route and HTTP status",
            ["route", "status"],
            registry=r,
        )
        self.in_flight = Gauge("swallow_api_in_flight", "Requests admitted and not finished", registry=r)
        self.queued = Gauge(
            "swallow_api_queued", "Admitted requests still waiting for their first token", registry=r
        )
        self.disconnects = Counter(
            "swallow_api_disconnects", "Clients that went away before their answer ended", registry=r
        )
        self.rejected = Counter(
            "swallow_api_rejected", "Requests refused with 429 by the admission limit", registry=r
        )
        self.prompt_tokens = Counter(
            "swallow_api_prompt_tokens", "Prompt tokens sent to the engine", registry=r
        )
        self.completion_tokens = Counter(
            "swallow_api_completion_tokens", "Tokens the engine generated for clients", registry=r
        )
        self.ttft = Histogram(
            "swallow_api_time_to_first_token_seconds",
            "Request arrival to first token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "swallow_api_time_per_output_token_seconds",
            "Mean time between output tokens after the first, per request",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
