"""``plan --isl/--osl``: the performance model (:mod:`swallow_trt.perf.model`) applied to a plan.

A plan knows the bytes (weights, KV cache per token, KV capacity) of each rank; this module hands them
to the model, picks the max batch size for the ISL/OSL (within memory), and returns the estimate the
plan prints: max throughput (every request queued at once, as ``trtllm-bench throughput`` measures),
a closed loop at ``--concurrency C`` streams, or an open loop at ``--rate R`` requests/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from swallow_trt.builders.plan import GpuPlan, Plan, PlanRequest, layout_for, make_plan, padded_vocab
from swallow_trt.errors import DoesNotFitError, UsageError
from swallow_trt.perf.model import (
    Deployment,
    Point,
    best_batch,
    closed_loop,
    deployment,
    open_loop,
    stage_step,
    weights_once_s,
)
from swallow_trt.quantize.formats import DTYPE_BYTES, KV_BY_SM, kv_bytes_per_element

# trtllm-bench caps its max batch at 4096 / pp to bound the decoder buffers (tuning.py); so does plan.
MAX_BATCH_CAP = 4096


@dataclass(frozen=True)
class Workload:
    isl: int
    osl: int
    concurrency: int | None = None
    rate: float | None = None

    @property
    def mode(self) -> str:
        return "concurrency" if self.concurrency else ("rate" if self.rate else "max_throughput")


@dataclass(frozen=True)
class Slo:
    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def excess(self, p: Point) -> float:
        """How far ``p`` is over the targets, as the larger relative excess: <= 0 meets them, and the
        more negative, the more headroom."""
        over = -math.inf
        if self.ttft_ms is not None:
            over = max(over, p.ttft_s * 1e3 / self.ttft_ms - 1)
        if self.tpot_ms is not None:
            over = max(over, p.tpot_s * 1e3 / self.tpot_ms - 1)
        return over

    def text(self) -> str:
        parts = []
        if self.ttft_ms is not None:
            parts.append(f"TTFT <= {self.ttft_ms:g} ms")
        if self.tpot_ms is not None:
            parts.append(f"TPOT <= {self.tpot_ms:g} ms")
        return " and ".join(parts)


@dataclass(frozen=True)
class Estimate:
    workload: Workload
    gpu: str
    gpus: int  # GPUs of the deployment (one engine instance: tp x pp)
    replicas: int
    max_batch_size: int
    sequences_fit: int  # sequences of isl + osl tokens the KV cache holds
    point: Point
    step_ms: dict[str, float]  # the decode round's terms at this load
    floors: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        p, w = self.point, self.workload
        total = p.output_tokens_per_s * self.replicas
        return {
            "isl": w.isl,
            "osl": w.osl,
            "mode": w.mode,
            "concurrency": round(p.concurrency * self.replicas, 2),
            "rate": w.rate,
            "max_batch_size": self.max_batch_size,
            "ttft_ms": round(p.ttft_s * 1e3, 3),
            "tpot_ms": round(p.tpot_s * 1e3, 3),
            "output_tokens_per_s": round(total, 1),
            "output_tokens_per_s_per_gpu": round(total / (self.gpus * self.replicas), 1),
            "output_tokens_per_s_per_user": round(p.per_user_tokens_per_s, 2),
            "requests_per_s": round(p.requests_per_s * self.replicas, 3),
            "gpu": self.gpu,
            "gpus": self.gpus * self.replicas,
            "replicas": self.replicas,
            "sequences_fit": self.sequences_fit,
            "saturated": p.saturated,
            "step_ms": {k: round(v, 4) for k, v in self.step_ms.items()},
            "floors": self.floors,
            "model": "swallow_trt.perf.model with the factors of swallow_trt/data/perf_factors.json "
            "(fitted to TensorRT-LLM v0.17 trtllm-bench engine figures and aiconfigurator 0.12 estimates; "
            "see BENCHMARKS.md, Plan accuracy)",
            "notes": self.notes,
        }


def model_context(plan: Plan) -> int:
    """Tokens a sequence may hold: the model's positions, capped at the card's recommended context."""
    positions = plan.model.arch.max_position_embeddings
    card = plan.model.registered.family.max_context if plan.model.registered else None
    return min(positions, card) if card else positions


def deployment_for(plan: Plan, g: GpuPlan) -> Deployment:
    arch = plan.model.arch
    dtype_bytes = DTYPE_BYTES[plan.dtype]
    kv_elem = kv_bytes_per_element(plan.kv_cache_dtype, plan.dtype)
    lay = layout_for(arch, plan.tp, plan.pp, plan.qformat, plan.moe_tp_size, plan.moe_ep_size)
    unit = 2 * lay.kv_heads_per_rank * arch.head_dim * kv_elem
    per_stage = lay.layers_per_stage
    full = min(per_stage, -(-arch.full_attention_layers // plan.pp))
    sliding = min(arch.sliding_layers, per_stage - full)
    return deployment(
        arch,
        g.gpu,
        plan.profile.sm,
        plan.qformat,
        tp=plan.tp,
        pp=plan.pp,
        moe_tp=plan.moe_tp_size,
        moe_ep=plan.moe_ep_size,
        read_bytes=g.weight_read_bytes,
        kv_bytes_per_token=full * unit,
        sliding_kv_bytes_per_token=sliding * unit,
        vocab_padded=padded_vocab(arch.vocab_size, plan.tp, plan.qformat),
        dtype_bytes=dtype_bytes,
        max_num_tokens=plan.max_num_tokens,
        fp8_fmha=plan.settings.use_fp8_context_fmha.value,
    )


def sequences_fit(plan: Plan, g: GpuPlan, isl: int, osl: int) -> int:
    """Sequences of isl + osl tokens in the KV cache: the scheduler (guaranteed_no_evict) reserves
    every block a request may need before it starts."""
    tpb = plan.engine.tokens_per_block
    blocks = -(-(isl + osl) // tpb)
    if not g.fits:
        return 0
    return g.kv_tokens // (blocks * tpb) if g.kv_tokens else g.kv_sequences


def step_terms_ms(d: Deployment, isl: int, osl: int, concurrency: float) -> dict[str, float]:
    """The round at this load, by term (one stage's share when pipelined)."""
    c = max(concurrency, 1.0)
    r = min(c / osl, d.max_num_tokens * d.pp / (isl + osl - 1))
    t = stage_step(
        d, r * (osl - 1) / d.pp, isl + osl / 2, r * isl / d.pp, r * isl * (isl + 1) / 2 / d.pp, r / d.pp
    )
    return {
        "weights_or_gemm": t.gemm * 1e3,
        "activations": t.activations * 1e3,
        "context_attention": t.context_attention * 1e3,
        "decode_attention": t.decode_attention * 1e3,
        "allreduce": t.allreduce * 1e3,
        "fixed": t.overhead * 1e3,
    }


def floors(plan: Plan, g: GpuPlan, d: Deployment, isl: int, osl: int) -> dict[str, float]:
    """Roofline floors at this ISL/OSL, labelled as floors: datasheet peaks, no overheads."""
    ctx_kv = (isl + osl / 2) * d.kv_bytes_per_token
    return {
        "what": "lower bounds from datasheet bandwidth and peak TFLOPS (no kernel efficiency, no overheads)",  # type: ignore[dict-item]
        "decode_step_batch1_ms": round(
            plan.pp * (g.weight_read_bytes + ctx_kv) / d.bandwidth_bytes_s * 1e3, 4
        ),
        "prefill_ms": round(
            max(
                weights_once_s(d),
                d.pp * (isl * d.gemm_flops_per_token + d.lm_head_flops) / d.gemm_flops_s,
            )
            * 1e3,
            4,
        ),
        "weights_read_once_ms": round(weights_once_s(d) * 1e3, 4),
    }


def check_workload(w: Workload) -> None:
    if w.isl < 1:
        raise UsageError(
            f"--isl must be at least 1, got {w.isl}", "pass the prompt length in tokens, e.g. --isl 1024"
        )
    if w.osl < 1:
        raise UsageError(
            f"--osl must be at least 1, got {w.osl}", "pass the answer length in tokens, e.g. --osl 256"
        )
    if w.concurrency is not None and w.rate is not None:
        raise UsageError(
            "--concurrency and --rate both given",
            "pass one: closed loop (--concurrency) or open loop (--rate)",
        )
    if w.concurrency is not None and w.concurrency < 1:
        raise UsageError(
            f"--concurrency must be at least 1, got {w.concurrency}", "pass a positive --concurrency"
        )
    if w.rate is not None and not w.rate > 0:
        raise UsageError(f"--rate must be above 0, got {w.rate}", "pass requests per second, e.g. --rate 2")


def plan_for_workload(req: PlanRequest, w: Workload) -> Plan:
    """The plan whose engine shapes hold prompts of ``isl`` and sequences of ``isl + osl`` tokens."""
    check_workload(w)
    plan = make_plan(req)
    context = model_context(plan)
    if w.isl + w.osl > context:
        raise UsageError(
            f"--isl {w.isl} + --osl {w.osl} = {w.isl + w.osl} tokens exceeds the {context}-token context of "
            f"{plan.model.display_name}",
            f"use --osl {max(1, context - w.isl)} or less"
            if w.isl < context
            else f"use --isl below {context}",
        )
    changes: dict[str, Any] = {}
    if w.isl + w.osl > plan.max_seq_len:
        if req.max_seq_len is not None:
            raise UsageError(
                f"--isl {w.isl} + --osl {w.osl} exceeds --max-seq-len {req.max_seq_len}",
                f"raise --max-seq-len to {w.isl + w.osl} or drop it",
            )
        changes["max_seq_len"] = w.isl + w.osl
    if w.isl > plan.max_input_len:
        if req.max_input_len is not None:
            raise UsageError(
                f"--isl {w.isl} exceeds --max-input-len {req.max_input_len}",
                f"raise --max-input-len to {w.isl} or drop it",
            )
        changes["max_input_len"] = w.isl
    return make_plan(replace(req, **changes)) if changes else plan


def pick_gpu(plan: Plan) -> GpuPlan:
    fitting = [g for g in plan.gpus if g.fits]
    return fitting[0] if fitting else plan.gpus[0]


def estimate_plan(req: PlanRequest, w: Workload) -> tuple[Plan, Estimate]:
    """The plan with the max batch recommended for ``w`` (unless ``--max-batch-size`` was given), and
    its estimate on the first GPU of the target that fits (``--gpu`` picks another)."""
    plan = plan_for_workload(req, w)
    g = pick_gpu(plan)
    fit = sequences_fit(plan, g, w.isl, w.osl)
    if fit < 1:
        raise DoesNotFitError(
            f"not one sequence of {w.isl + w.osl} tokens fits the KV cache of {g.gpu.name}",
            "use a smaller format (--int4-awq), an FP8 KV cache or a larger target",
        )
    d = deployment_for(plan, g)
    cap = max(1, MAX_BATCH_CAP // plan.pp)
    limit = min(fit, req.max_batch_size or cap)
    notes: list[str] = []
    if w.concurrency is not None:
        if w.concurrency > fit:
            small = next((k for k in ("fp8", "int8") if k in KV_BY_SM.get(plan.profile.sm, ())), None)
            raise DoesNotFitError(
                f"--concurrency {w.concurrency}: the KV cache of {g.gpu.name} holds {fit} sequences of "
                f"{w.isl}+{w.osl} tokens",
                f"use --concurrency {fit} or less"
                + (f", --kv-cache-dtype {small}" if plan.kv_cache_dtype == "auto" and small else "")
                + ", or more GPUs (--tp)",
            )
        if req.max_batch_size is not None and w.concurrency > req.max_batch_size:
            raise UsageError(
                f"--concurrency {w.concurrency} exceeds --max-batch-size {req.max_batch_size}",
                f"use --concurrency {req.max_batch_size} or less, or raise --max-batch-size",
            )
        batch = req.max_batch_size or w.concurrency
    elif w.rate is not None:
        batch = req.max_batch_size or limit
    else:
        batch = req.max_batch_size or best_batch(d, w.isl, w.osl, limit)
    if req.max_batch_size is None and batch != plan.max_batch_size:
        # The engine's logits buffer grows with max_batch_size: re-plan and re-check the fit.
        plan = make_plan(replace(req, max_batch_size=batch, max_seq_len=plan.max_seq_len,
                                 max_input_len=plan.max_input_len), suggest=False)  # fmt: skip
        g = next(x for x in plan.gpus if x.gpu.name == g.gpu.name)
        fit = sequences_fit(plan, g, w.isl, w.osl)
        d = deployment_for(plan, g)
        if w.concurrency is not None and w.concurrency > fit:
            raise DoesNotFitError(
                f"--concurrency {w.concurrency}: with max_batch_size {batch} the KV cache of {g.gpu.name} holds "
                f"{fit} sequences of {w.isl}+{w.osl} tokens",
                f"use --concurrency {fit} or less, or more GPUs (--tp)",
            )
    running = min(batch, fit)
    if w.rate is not None:
        point = open_loop(d, w.isl, w.osl, w.rate, running)
        if point is None:
            most = closed_loop(d, w.isl, w.osl, running).requests_per_s
            raise UsageError(
                f"--rate {w.rate:g} requests/s is more than this engine sustains at {w.isl}/{w.osl} "
                f"(about {most:.3g} requests/s at batch {running})",
                "use a lower --rate, more GPUs, or the SLO search (--slo-ttft-ms / --slo-tpot-ms) to size replicas",
            )
        load = point.concurrency
        if req.max_batch_size is None:
            batch = min(running, max(1, _round_batch(point.concurrency * 2)))
    else:
        point = closed_loop(d, w.isl, w.osl, w.concurrency or running)
        load = point.concurrency
        if w.concurrency is None:
            notes.append(
                f"max throughput: every request queued at once, {running} running (max_batch_size {batch}, "
                f"{fit} sequences fit); TTFT excludes the wait in the queue"
            )
    if len(plan.gpus) > 1:
        notes.append(f"estimated on {g.gpu.name}; --gpu picks another GPU of the target")
    if plan.gpu_count > plan.tp * plan.pp:
        notes.append(
            f"one engine instance on {plan.tp * plan.pp} of the {plan.gpu_count} GPUs; the SLO search "
            "(--slo-ttft-ms/--slo-tpot-ms) sizes replicas over all of them"
        )
    est = Estimate(
        workload=w,
        gpu=g.gpu.name,
        gpus=plan.tp * plan.pp,
        replicas=1,
        max_batch_size=batch,
        sequences_fit=fit,
        point=point,
        step_ms=step_terms_ms(d, w.isl, w.osl, load),
        floors=floors(plan, g, d, w.isl, w.osl),
        notes=notes,
    )
    return plan, est


def _round_batch(n: float) -> int:
    """Round up to a multiple of 8 (16 above 64) so the engine's batch dimension stays aligned."""
    step = 8 if n <= 64 else 16
    return int(-(-int(n + 0.999) // step) * step)


def workload_request(
    isl: int | None,
    osl: int | None,
    concurrency: int | None,
    rate: float | None,
    slo_ttft_ms: float | None,
    slo_tpot_ms: float | None,
) -> tuple[Workload, Slo | None] | None:
    """``plan``'s workload flags checked together: None when none is given (a plain plan)."""
    slo = Slo(slo_ttft_ms, slo_tpot_ms) if slo_ttft_ms is not None or slo_tpot_ms is not None else None
    if isl is None and osl is None:
        if concurrency is not None or rate is not None or slo is not None:
            given = (
                "--concurrency" if concurrency is not None else ("--rate" if rate is not None else "an SLO")
            )
            raise UsageError(f"{given} needs the workload", "pass --isl and --osl (prompt and answer tokens)")
        return None
    if isl is None or osl is None:
        raise UsageError("--isl and --osl go together", "pass both, e.g. --isl 1024 --osl 256")
    w = Workload(isl, osl, concurrency, rate)
    check_workload(w)
    return w, slo
