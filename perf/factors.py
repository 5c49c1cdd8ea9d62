"""Efficiency factors of the performance model, read from ``swallow_trt/data/perf_factors.json``.

The data file holds every number the model uses beyond the datasheet figures of the target profile:
per GPU generation (SM) and GEMM kind, and per interconnect. Each block names the measured figures it
was fitted to (``sources``). Nothing here is a tuning knob in code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any


def data_path() -> Path:
    import swallow_trt

    return Path(swallow_trt.__file__).parent / "data" / "perf_factors.json"


@dataclass(frozen=True)
class Gemm:
    peak_fraction: float  # of the datasheet dense TFLOPS of the kind, at large token counts
    ramp_tokens: float  # a GEMM of T tokens runs at peak_fraction x (1 + ramp / max(T, ramp))^-1


@dataclass(frozen=True)
class Generation:
    name: str
    source: str
    weight_bandwidth: float  # fraction of datasheet HBM bandwidth when streaming weights
    kv_bandwidth: float  # the same for the decode attention's KV-cache reads
    activation_passes: float  # HBM passes over (hidden + MLP width) x 2 bytes per token per layer
    context_attention_peak: float  # context FMHA: fraction of peak at long prompts
    context_attention_ramp_tokens: float  # context FMHA at context c runs at c / (c + ramp) of that
    step_overhead_s: float  # fixed cost of one engine step (scheduler, sampling, launches)
    layer_overhead_s: float  # per layer of a stage per step (kernel launches beyond the GEMMs)
    moe_layer_overhead_s: float  # more per MoE layer: router, top-k, permute, grouped GEMMs, finalize
    sequence_overhead_s: float  # per sequence in the step (batch bookkeeping, sampling)
    request_overhead_s: float  # per request, once, on its first token (enqueue, response path)
    first_token_factor: float  # measured TTFT at light load over the prefill's kernel time
    gemm: dict[str, Gemm]


@dataclass(frozen=True)
class Link:
    name: str
    bandwidth_bytes_s: float  # achievable per-rank bandwidth of a ring all-reduce step
    latency_s: float  # per collective


@dataclass(frozen=True)
class Factors:
    generations: dict[str, Generation]
    fallback: dict[str, str]
    links: dict[str, Link]
    gemm_kind_by_format: dict[str, str]
    pp_bubble_per_stage: float
    sources: dict[str, str]

    def generation(self, sm: int) -> Generation:
        key = f"sm{sm}"
        key = self.fallback.get(key, key)
        if key in self.generations:
            return self.generations[key]
        # An SM the data does not know: the nearest older generation it has.
        known = sorted((int(k[2:]), k) for k in self.generations)
        older = [k for s, k in known if s <= sm] or [known[0][1]]
        return self.generations[older[-1]]

    def gemm(self, sm: int, qformat: str) -> Gemm:
        gen = self.generation(sm)
        kind = self.gemm_kind_by_format.get(qformat, "bf16")
        return gen.gemm.get(kind) or gen.gemm["bf16"]

    def link(self, text: str) -> Link:
        """The interconnect a profile's ``link`` text names (``NVLink4 900 GB/s``, ``PCIe5``)."""
        m = re.search(r"(nvlink|pcie)\s*(\d)?", text.lower())
        if m is None:
            return self.links["pcie4"]
        kind, gen = m.group(1), m.group(2)
        name = f"{kind}{gen}" if gen else ("nvlink4" if kind == "nvlink" else "pcie4")
        if name in self.links:
            return self.links[name]
        same = sorted(k for k in self.links if k.startswith(kind))
        return self.links[same[-1] if same else "pcie4"]


def _generation(name: str, raw: dict[str, Any]) -> Generation:
    gemm = {k: Gemm(float(v["peak_fraction"]), float(v["ramp_tokens"])) for k, v in raw["gemm"].items()}
    fields = {k: float(v) for k, v in raw.items() if k not in ("gemm", "source")}
    return Generation(name=name, source=str(raw["source"]), gemm=gemm, **fields)


def parse(raw: dict[str, Any]) -> Factors:
    links = {
        k: Link(k, float(v["bandwidth_gb_s"]) * 1e9, float(v["latency_s"]))
        for k, v in raw["links"].items()
        if isinstance(v, dict)
    }
    fallback = {k: v for k, v in raw.get("generation_fallback", {}).items() if k.startswith("sm")}
    return Factors(
        generations={k: _generation(k, v) for k, v in raw["generations"].items()},
        fallback=fallback,
        links=links,
        gemm_kind_by_format=dict(raw["gemm_kind_by_format"]),
        pp_bubble_per_stage=float(raw["pipeline"]["bubble_per_stage"]),
        sources=dict(raw["sources"]),
    )


@cache
def load_factors() -> Factors:
    return parse(json.loads(data_path().read_text(encoding="utf-8")))
