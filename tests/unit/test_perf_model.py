"""The performance model's sanity rules (issue 16) on every shipped target x the registry's model shapes,
and the physics it must keep: prefill reads the weights, TPOT grows and per-user speed falls with load,
MoE reads grow from the top-k experts to all of them, weight-only INT4 is no faster than BF16 once the
step is compute-bound, every factor has a source."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from swallow_trt.builders.estimate import deployment_for, pick_gpu, sequences_fit
from swallow_trt.builders.plan import PlanRequest, make_plan
from swallow_trt.errors import SwallowTrtError
from swallow_trt.perf.factors import load_factors
from swallow_trt.perf.model import (
    Deployment,
    batch_grid,
    closed_loop,
    open_loop,
    prefill_s,
    round_s,
    weights_once_s,
)
from swallow_trt.profiles import SHIPPED
from swallow_trt.registry import load_registry

WORKLOADS = ((128, 128), (1024, 256), (2048, 2048))


def _shapes() -> list[str]:
    """One registered repo per distinct architecture shape (the registry repeats shapes across versions)."""
    seen: dict[tuple[object, ...], str] = {}
    for m in load_registry().models:
        a = m.arch
        key = (a.hf_class, a.hidden_size, a.num_hidden_layers, a.num_attention_heads, a.num_key_value_heads,
               a.vocab_size, a.intermediate_size, a.num_local_experts, a.checkpoint_quant)  # fmt: skip
        seen.setdefault(key, m.repo)
    return sorted(seen.values())


SHAPES = _shapes()


def _deployments(target: str) -> list[tuple[str, Deployment, int]]:
    """(repo, model view, sequences of the longest workload that fit) for each shape that fits the
    target in its default format and parallelism."""
    found = []
    for repo in SHAPES:
        try:
            plan = make_plan(
                PlanRequest(model=repo, target=target, runtime="auto", max_seq_len=4096), suggest=False
            )
        except SwallowTrtError:
            continue
        g = pick_gpu(plan)
        if g.fits:
            found.append((repo, deployment_for(plan, g), sequences_fit(plan, g, 2048, 2048)))
    return found


@pytest.fixture(scope="module", params=SHIPPED)
def target_models(request: pytest.FixtureRequest) -> list[tuple[str, Deployment, int]]:
    models = _deployments(request.param)
    assert models, f"no registry model fits {request.param}"
    return models


def test_prefill_is_never_faster_than_reading_the_weights(
    target_models: list[tuple[str, Deployment, int]],
) -> None:
    for repo, d, _ in target_models:
        for isl in (1, 16, 128, 1024, 4096):
            assert prefill_s(d, isl) >= weights_once_s(d), (repo, isl)
        # and never faster than one decode step: a prefill reads every weight too
        assert prefill_s(d, 128) >= round_s(d, 1.0, 128) * 0.999, repo


def test_tpot_grows_and_per_user_speed_falls_with_concurrency(
    target_models: list[tuple[str, Deployment, int]],
) -> None:
    for repo, d, fit in target_models:
        for isl, osl in WORKLOADS:
            points = [closed_loop(d, isl, osl, c) for c in batch_grid(max(1, min(fit, 4096)))]
            for a, b in itertools.pairwise(points):
                where = (repo, isl, osl, a.concurrency, b.concurrency)
                assert b.tpot_s >= a.tpot_s * (1 - 1e-9), where
                assert b.per_user_tokens_per_s <= a.per_user_tokens_per_s * (1 + 1e-9), where
                assert b.output_tokens_per_s >= a.output_tokens_per_s * 0.999, where


def test_open_loop_latency_grows_with_the_rate(target_models: list[tuple[str, Deployment, int]]) -> None:
    for repo, d, fit in target_models[:3]:
        top = closed_loop(d, 1024, 256, fit).requests_per_s
        points = [open_loop(d, 1024, 256, top * f, fit) for f in (0.05, 0.3, 0.6, 0.9)]
        assert all(p is not None for p in points), repo
        ttft = [p.ttft_s for p in points if p]
        tpot = [p.tpot_s for p in points if p]
        assert ttft == sorted(ttft), repo
        assert tpot == sorted(tpot), repo
        assert open_loop(d, 1024, 256, top * 1.01, fit) is None, repo


def _deployment(model: str, target: str, **kw: object) -> Deployment:
    plan = make_plan(PlanRequest(model=model, target=target, **kw))  # type: ignore[arg-type]
    return deployment_for(plan, pick_gpu(plan))


def test_moe_reads_top_k_experts_at_batch_1_and_all_at_high_batch() -> None:
    d = _deployment("tokyotech-llm/Swallow-MX-8x7b-NVE-v0.1", "hopper", qformat="fp8", tp=2, gpus=2)
    assert d.experts == 8
    assert d.top_k == 2
    one = d.weight_read_bytes(1)
    assert one == pytest.approx(d.dense_read_bytes + d.layers * 2 * d.expert_bytes)
    assert d.weight_read_bytes(4) > one
    assert d.weight_read_bytes(512) == pytest.approx(
        d.dense_read_bytes + d.layers * 8 * d.expert_bytes, rel=1e-6
    )


def test_int4_weight_only_is_not_faster_than_bf16_at_batch_512() -> None:
    """aiconfigurator's A100 data: INT4 no faster than BF16 at batch 512, while at batch 1 it reads a
    quarter of the bytes and is much faster."""
    bf16 = _deployment("8b", "ampere", qformat="full_prec", gpu="A100-SXM4-80GB")
    int4 = _deployment("8b", "ampere", qformat="int4_awq", gpu="A100-SXM4-80GB")
    assert round_s(int4, 512, 1024) >= round_s(bf16, 512, 1024)
    assert round_s(int4, 1, 1024) < 0.6 * round_s(bf16, 1, 1024)


def test_tensor_parallel_pays_all_reduce_over_its_link() -> None:
    tp4 = _deployment("70b", "h100x4", qformat="fp8", tp=4)
    assert tp4.link.name == "nvlink4"
    pcie = _deployment("70b", "ada", qformat="fp8", tp=4, gpus=4, gpu="L40S")
    assert pcie.link.name == "pcie4"
    assert pcie.link.bandwidth_bytes_s < tp4.link.bandwidth_bytes_s


def test_every_factor_names_its_source() -> None:
    path = Path(__file__).resolve().parents[2] / "core" / "data" / "perf_factors.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    f = load_factors()
    assert f.sources
    for name, gen in f.generations.items():
        assert any(key in gen.source for key in f.sources), (name, gen.source)
        assert 0 < gen.weight_bandwidth <= 1
        assert 0 < gen.kv_bandwidth <= 1
        assert gen.first_token_factor >= 1
        assert all(0 < g.peak_fraction <= 1 for g in gen.gemm.values())
    assert raw["links"]["source"]
    assert raw["pipeline"]["source"]
    # every format a shipped target supports maps to a GEMM kind its generation has
    from swallow_trt.profiles import all_targets

    for profile in all_targets():
        gen = f.generation(profile.sm)
        for fmt in profile.formats.supported:
            assert f.gemm_kind_by_format[fmt] in gen.gemm, (profile.name, fmt)


def test_pipeline_parallel_keeps_the_rules() -> None:
    """PP: micro-batches through the stages; the same monotonicity, and a lone request pays every stage."""
    pp2 = _deployment("70b", "h100x4", qformat="fp8", tp=2, pp=2)
    tp2 = _deployment("70b", "hopper", qformat="fp8", tp=2, gpus=2, gpu="H100-SXM5-80GB")
    assert pp2.layers == tp2.layers // 2
    points = [closed_loop(pp2, 1024, 256, c) for c in batch_grid(512)]
    for a, b in itertools.pairwise(points):
        assert b.tpot_s >= a.tpot_s * (1 - 1e-9)
        assert b.per_user_tokens_per_s <= a.per_user_tokens_per_s * (1 + 1e-9)
    # at batch 1 a token crosses both stages: no faster than the two-GPU engine without PP
    assert round_s(pp2, 1.0, 1024) >= round_s(tp2, 1.0, 1024) * 0.99
    assert prefill_s(pp2, 1024) >= weights_once_s(pp2)
