"""How fast one engine instance runs: prefill, a decode step, and in-flight batching in steady state.

Every time below is the larger of, or the sum of, a few physical terms; each term divides bytes or
FLOPs of one rank of the fullest pipeline stage by a datasheet rate (the target profile's GPU) times an
efficiency factor from ``perf_factors.json`` (:mod:`swallow_trt.perf.factors`):

* GEMMs of a step of ``T`` tokens: ``max(weights read / (bandwidth x weight_bandwidth),
  FLOPs x (1 + ramp_tokens / max(T, ramp_tokens)) / (peak TFLOPS of the format x peak_fraction))``;
  weights read are the
  dense weights plus, for MoE, the experts the step's tokens touch (``E x (1 - (1 - k/E)^T)``: the
  top-k experts at batch 1, all of them at high batch);
* activation traffic: ``T x layers x activation_passes x (hidden + MLP width) x 2 bytes`` at the
  weight bandwidth (norms, activations, residuals, quantise/dequantise);
* context attention: ``4 x heads x head_dim x sum of attended positions`` per layer at the FMHA rate,
  which ramps with the context length ``c`` as ``c / (c + ramp)``;
* decode attention: every decoding sequence reads its KV cache, ``ctx x KV bytes per token``, at
  ``kv_bandwidth``;
* tensor parallelism: two ring all-reduces per layer of ``T x hidden x 2`` bytes, each ``latency +
  2 (tp-1)/tp x bytes / link bandwidth`` (NVLink or PCIe, from the profile's ``link``);
* pipeline parallelism: a round is ``pp`` micro-batches through ``pp`` stages, plus a hand-off per
  stage and a bubble fraction per extra stage;
* fixed costs: per step, per layer of a stage (more for an MoE layer), per sequence in the step, and per
  request once.

In-flight batching at concurrency ``C`` with prompts of ISL and answers of OSL tokens (closed loop):
every round each running request gets one token, and requests finish (and new ones start) at
``r = min(C / OSL, token budget / (ISL + OSL - 1))`` per round, so each round carries ``r x ISL``
prefill tokens beside ``r x (OSL - 1)`` decode tokens; TPOT is the round time, throughput
``r x OSL / round``. Open loop at R requests/s solves ``r / round = R`` for the concurrency, and adds
M/D/1 queueing to TTFT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from swallow_trt.arch import ModelArch
from swallow_trt.perf.factors import Gemm, Generation, Link, load_factors
from swallow_trt.profiles import GpuSpec
from swallow_trt.quantize.formats import FORMATS

BYTES_ACT = 2  # activations, all-reduce messages and context attention run in 16-bit


@dataclass(frozen=True)
class Deployment:
    """One engine instance (TP x PP ranks) as the model sees it: one rank of the fullest stage."""

    gpu: str
    sm: int
    qformat: str
    tp: int
    pp: int
    layers: int  # layers of one stage
    hidden: int
    heads_per_rank: int
    head_dim: int
    mlp_width_per_rank: int  # MLP width a token runs through on this rank (MoE: top-k experts' share)
    dense_read_bytes: float  # weights every step streams whatever its tokens (MoE experts excluded)
    expert_bytes: float  # one expert of one layer on this rank (0: dense)
    experts: int
    experts_per_rank: int
    top_k: int
    moe_ep: int
    gemm_flops_per_token: float  # 2 x GEMM weights one token touches on this rank (lm_head excluded)
    expert_flops_per_token: float  # the MoE experts' share of it (0: dense)
    lm_head_flops: float  # 2 x this rank's lm_head weights: once per decode token and per prompt
    kv_bytes_per_token: float  # this rank's KV bytes per context token (full-attention layers)
    sliding_kv_bytes_per_token: float  # the same for sliding-window layers (0 without)
    sliding_window: int
    bandwidth_bytes_s: float
    gemm_flops_s: float  # datasheet dense rate of the format's GEMM kind
    attention_flops_s: float  # context FMHA's dense rate (FP8 where the engine runs FP8 FMHA)
    max_num_tokens: int  # tokens one engine step (one micro-batch) may carry
    gen: Generation
    gemm: Gemm
    link: Link
    pp_bubble: float

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    def weight_read_bytes(self, tokens: float) -> float:
        """Weights one step of ``tokens`` tokens streams: the experts its tokens route to (MoE)."""
        if not self.experts:
            return self.dense_read_bytes
        tokens = max(tokens, 1.0)
        distinct = self.experts * (1.0 - math.pow(1.0 - self.top_k / self.experts, tokens))
        # The fullest rank holds at least its share of a token's top-k.
        per_rank = max(distinct / self.moe_ep, math.ceil(self.top_k / self.moe_ep))
        per_rank = min(per_rank, self.experts_per_rank)
        return self.dense_read_bytes + self.layers * per_rank * self.expert_bytes


@dataclass(frozen=True)
class StepTerms:
    """One stage's time for one step, by term (seconds)."""

    gemm: float
    gemm_memory: float  # the weight-read side of the GEMM roofline
    gemm_compute: float  # the FLOP side
    activations: float
    context_attention: float
    decode_attention: float
    allreduce: float
    overhead: float

    @property
    def total(self) -> float:
        return (
            self.gemm
            + self.activations
            + self.context_attention
            + self.decode_attention
            + self.allreduce
            + self.overhead
        )


def stage_step(
    d: Deployment,
    decode: float,
    decode_ctx: float,
    prefill_tokens: float = 0.0,
    prefill_ctx_sum: float = 0.0,
    prefill_seqs: float = 0.0,
) -> StepTerms:
    """One stage runs one step: ``decode`` sequences at context ``decode_ctx`` plus ``prefill_tokens``
    prompt tokens whose attended positions sum to ``prefill_ctx_sum``, from ``prefill_seqs`` prompts
    finishing their prefill in this step (they, like every decode token, go through the lm_head)."""
    g, gen = d.gemm, d.gen
    tokens = decode + prefill_tokens
    bw = d.bandwidth_bytes_s
    memory = d.weight_read_bytes(tokens) / (bw * gen.weight_bandwidth)
    # Small token counts fill GEMM tiles poorly: half the rate at ``ramp_tokens``, never worse (below
    # it the kernels are bound by the weight reads anyway). An expert's GEMM sees only the tokens routed
    # to it (T x k / E).
    rate = d.gemm_flops_s * g.peak_fraction
    compute = 0.0
    if tokens > 0:
        dense = (
            tokens * (d.gemm_flops_per_token - d.expert_flops_per_token)
            + (decode + prefill_seqs) * d.lm_head_flops
        )
        compute = dense * (1 + g.ramp_tokens / max(tokens, g.ramp_tokens)) / rate
        if d.expert_flops_per_token:
            per_expert = tokens * d.top_k / d.experts
            compute += (
                tokens
                * d.expert_flops_per_token
                * (1 + g.ramp_tokens / max(per_expert, g.ramp_tokens))
                / rate
            )

    act_bytes = tokens * d.layers * gen.activation_passes * (d.hidden + d.mlp_width_per_rank) * BYTES_ACT
    activations = act_bytes / (bw * gen.weight_bandwidth)
    ctx_attn = 0.0
    if prefill_tokens > 0 and prefill_ctx_sum > 0:
        attn_flops = 4.0 * d.heads_per_rank * d.head_dim * d.layers * prefill_ctx_sum
        mean_ctx = prefill_ctx_sum / prefill_tokens
        rate = (
            d.attention_flops_s
            * gen.context_attention_peak
            * mean_ctx
            / (mean_ctx + gen.context_attention_ramp_tokens)
        )
        ctx_attn = attn_flops / rate
    kv = decode_ctx * d.kv_bytes_per_token
    if d.sliding_kv_bytes_per_token:
        kv += min(decode_ctx, d.sliding_window) * d.sliding_kv_bytes_per_token
    dec_attn = decode * kv / (bw * gen.kv_bandwidth)
    allreduce = 0.0
    if d.tp > 1:
        message = tokens * d.hidden * BYTES_ACT
        one = d.link.latency_s + 2 * (d.tp - 1) / d.tp * message / d.link.bandwidth_bytes_s
        allreduce = 2 * d.layers * one
    overhead = (
        gen.step_overhead_s
        + (gen.layer_overhead_s + (gen.moe_layer_overhead_s if d.experts else 0.0)) * d.layers
        + gen.sequence_overhead_s * (decode + prefill_seqs)
    )
    return StepTerms(
        gemm=max(memory, compute),
        gemm_memory=memory,
        gemm_compute=compute,
        activations=activations,
        context_attention=ctx_attn,
        decode_attention=dec_attn,
        allreduce=allreduce,
        overhead=overhead,
    )


def _handoff_s(d: Deployment, tokens: float) -> float:
    return d.link.latency_s + tokens * d.hidden * BYTES_ACT / d.link.bandwidth_bytes_s


def round_s(
    d: Deployment,
    decode: float,
    decode_ctx: float,
    prefill_tokens: float = 0.0,
    prefill_ctx_sum: float = 0.0,
    prefill_seqs: float = 0.0,
) -> float:
    """Time for every running sequence to get one token. With PP the batch is split into ``pp``
    micro-batches that chase each other through the ``pp`` stages."""
    if d.pp == 1:
        return stage_step(d, decode, decode_ctx, prefill_tokens, prefill_ctx_sum, prefill_seqs).total
    pp = d.pp
    stage = stage_step(
        d, decode / pp, decode_ctx, prefill_tokens / pp, prefill_ctx_sum / pp, prefill_seqs / pp
    )
    tokens = (decode + prefill_tokens) / pp
    return pp * (stage.total + _handoff_s(d, tokens)) * (1 + d.pp_bubble * (pp - 1))


def prefill_s(d: Deployment, isl: int) -> float:
    """One prompt alone: chunks of ``max_num_tokens`` through every stage in turn."""
    total = 0.0
    start = 0
    while start < isl:
        n = min(d.max_num_tokens, isl - start)
        ctx_sum = n * start + n * (n + 1) / 2
        last = 1.0 if start + n >= isl else 0.0
        total += d.pp * stage_step(d, 0.0, 0.0, n, ctx_sum, last).total + (d.pp - 1) * _handoff_s(d, n)
        start += n
    return total


def weights_once_s(d: Deployment) -> float:
    """Reading this rank's dense weights once at the datasheet bandwidth (the sanity floor of prefill)."""
    return d.pp * d.dense_read_bytes / d.bandwidth_bytes_s


@dataclass(frozen=True)
class Point:
    """Steady state of one engine instance."""

    concurrency: float  # requests in the engine (running or waiting for their prefill)
    ttft_s: float
    tpot_s: float
    output_tokens_per_s: float
    requests_per_s: float
    saturated: bool  # the step's token budget, not the concurrency, limits how fast requests start

    @property
    def per_user_tokens_per_s(self) -> float:
        return 1.0 / self.tpot_s if self.tpot_s > 0 else 0.0


def _budget(d: Deployment) -> float:
    return float(d.max_num_tokens * d.pp)


def _prompts_per_step(r: float, poisson: bool) -> list[tuple[int, float]]:
    """How many prompts start in one step, with probabilities, for ``r`` on average: whole prompts
    (a step carries a prompt or it does not), evenly staggered in a closed loop, Poisson in an open one."""
    if not poisson:
        k = math.floor(r)
        frac = r - k
        return [(k, 1 - frac), (k + 1, frac)] if frac > 1e-9 else [(k, 1.0)]
    top = int(r + 5 * math.sqrt(r) + 4)
    p = math.exp(-r)
    out = []
    for k in range(top + 1):
        out.append((k, p))
        p *= r / (k + 1)
    total = sum(w for _, w in out)
    return [(k, w / total) for k, w in out]


def mean_round_s(d: Deployment, isl: int, osl: int, r: float, poisson: bool = False) -> float:
    """The mean step time (one token for every decoding request) when ``r`` requests start per step
    on average: every step carries ``r x (OSL - 1)`` decode tokens and whole prompts, as many as arrive
    (evenly staggered in a closed loop, Poisson in an open one), cut to the token budget; what a full
    step cannot take waits for the next, filling steps that would have carried less."""
    decode = r * (osl - 1)
    ctx = isl + osl / 2
    room = max(_budget(d) - decode, 0.0)
    loads = [(min(k * isl, room), w) for k, w in _prompts_per_step(r, poisson) if w > 0]
    # Carry-over keeps the mean at r x ISL: move the deficit's weight from the lightest steps to full ones.
    deficit = r * isl - sum(p * w for p, w in loads)
    if deficit > 1e-9 and room > 0:
        loads.sort()
        moved: list[tuple[float, float]] = []
        for p, w in loads:
            take = min(w, deficit / (room - p)) if room > p and deficit > 0 else 0.0
            deficit -= take * (room - p)
            moved += [(p, w - take), (room, take)]
        loads = moved
    total = 0.0
    for prefill, w in loads:
        if w > 0:
            total += w * round_s(d, decode, ctx, prefill, prefill * (isl + 1) / 2, prefill / isl)
    return total


def first_token_s(d: Deployment, isl: int) -> float:
    """TTFT of a request that finds the engine idle: its prefill alone, scaled by the measured ratio
    of time-to-first-token to the prefill's kernel time, plus the per-request cost."""
    return prefill_s(d, isl) * d.gen.first_token_factor + d.gen.request_overhead_s


def closed_loop(d: Deployment, isl: int, osl: int, concurrency: float) -> Point:
    """``concurrency`` streams, each sending its next request when the last one finishes."""
    c = max(concurrency, 1e-9)
    budget = _budget(d)
    rate_cap = budget / (isl + osl - 1)
    r = min(c / osl, rate_cap)  # requests starting (and finishing) per round
    if c <= 1.0 + 1e-9:
        # One stream alone: its prefill runs by itself, then one decode step per token.
        tpot = round_s(d, 1.0, isl + osl / 2)
        ttft = first_token_s(d, isl)
        latency = ttft + (osl - 1) * tpot
        return Point(c, ttft, tpot, c * osl / latency, c / latency, False)
    one = mean_round_s(d, isl, osl, r)
    decode = r * (osl - 1)
    prefill_round = round_s(
        d, decode, isl + osl / 2, min(isl, budget), min(isl, budget) * (min(isl, budget) + 1) / 2, 1.0
    )
    steps_prefill = max(1, math.ceil(isl / max(budget - decode, 1.0)))
    queued_steps = max(0.0, c / r - osl) if r > 0 else 0.0
    ttft = (
        (0.5 + queued_steps) * one
        + steps_prefill * prefill_round * d.gen.first_token_factor
        + d.gen.request_overhead_s
    )
    return Point(c, ttft, one, r * osl / one, r / one, r >= rate_cap - 1e-12)


def open_loop(d: Deployment, isl: int, osl: int, rate: float, max_concurrency: float) -> Point | None:
    """Poisson arrivals at ``rate`` requests/s into an engine of ``max_concurrency`` slots; None if it
    cannot sustain the rate.

    The number of requests in the engine is a birth-death chain: arrivals at ``rate``, completions at
    ``D(n) = r(n) / step(n)`` with ``n`` running (the closed loop's rate at ``n``, prompts arriving as
    Poisson counts per step); requests beyond the slots wait. Its stationary distribution gives the
    mean running and waiting counts, so TPOT = running / (rate x OSL) (Little's law over tokens) rises
    steeply near saturation, as measured serving does, and the wait adds to TTFT."""
    slots = max(1, int(max_concurrency))
    ctx = isl + osl / 2
    cap = _budget(d) / (isl + osl - 1)

    def step(n: float) -> float:
        return max(mean_round_s(d, isl, osl, min(n / osl, cap), poisson=True), round_s(d, 1.0, ctx))

    # Step times on a log grid of running counts, interpolated in log n.
    grid = sorted({1, slots, *(round(slots ** (i / 15)) for i in range(16))})
    times = [step(n) for n in grid]

    def done_rate(n: int) -> float:
        k = min(n, slots)
        i = next(j for j, g in enumerate(grid) if g >= k)
        if grid[i] == k or i == 0:
            t = times[i]
        else:
            lo, hi = grid[i - 1], grid[i]
            w = (math.log(k) - math.log(lo)) / (math.log(hi) - math.log(lo))
            t = times[i - 1] + w * (times[i] - times[i - 1])
        return min(k / osl, cap) / t

    full = done_rate(slots)
    if rate >= full * 0.999:
        return None
    p, total, running, peak = 1.0, 1.0, 0.0, 1.0
    for n in range(1, slots + 1):
        p *= rate / done_rate(n)
        total += p
        running += p * n
        peak = max(peak, p)
        if p < 1e-12 * peak and n > rate * osl * times[0]:
            p = 0.0  # the rest of the chain holds nothing
            break
    # Beyond the slots: a geometric tail of waiting requests.
    q = rate / full
    waiting = p * q / (1 - q) ** 2
    total += p * q / (1 - q)
    running += p * slots * q / (1 - q)
    running /= total
    waiting /= total
    tpot = max(running / (rate * osl), round_s(d, 1.0, ctx))
    r = min(running / osl, cap)
    decode = r * (osl - 1)
    # A new prompt shares its step with the others that arrived meanwhile (Poisson: r more on average);
    # what does not fit the step's budget waits for the next ones.
    tokens = (1 + r) * isl
    room = max(_budget(d) - decode, 1.0)
    steps = math.ceil(tokens / room)
    per_step = tokens / steps
    prefill = steps * round_s(d, decode, ctx, per_step, per_step * (isl + 1) / 2, (1 + r) / steps)
    # Wait for the step in flight, the prefill (mixed with the running decodes), and any queue for a slot.
    ttft = 0.5 * tpot + prefill * d.gen.first_token_factor + waiting / rate + d.gen.request_overhead_s
    return Point(running + waiting, ttft, tpot, rate * osl, rate, False)


def batch_grid(limit: int) -> list[int]:
    """Max batch sizes worth building: powers of two and their midpoints up to ``limit``, and ``limit``."""
    grid = {1, limit}
    b = 2
    while b <= limit:
        grid.add(b)
        if b + b // 2 <= limit:
            grid.add(b + b // 2)
        b *= 2
    return sorted(grid)


def best_batch(d: Deployment, isl: int, osl: int, limit: int, within: float = 0.97) -> int:
    """The smallest max batch whose throughput is within ``within`` of the best up to ``limit``:
    beyond it more batch buys queueing and latency, not tokens."""
    grid = batch_grid(max(1, limit))
    tput = {b: closed_loop(d, isl, osl, b).output_tokens_per_s for b in grid}
    top = max(tput.values())
    return min(b for b in grid if tput[b] >= within * top)


def deployment(
    arch: ModelArch,
    gpu: GpuSpec,
    sm: int,
    qformat: str,
    *,
    tp: int,
    pp: int,
    moe_tp: int,
    moe_ep: int,
    read_bytes: int,
    kv_bytes_per_token: int,
    sliding_kv_bytes_per_token: int,
    vocab_padded: int,
    dtype_bytes: int,
    max_num_tokens: int,
    fp8_fmha: bool,
) -> Deployment:
    """The model's view of one rank of the fullest stage. ``read_bytes`` is the plan's weights read per
    decode step at batch 1 (top-k experts for MoE); the experts' share is taken out of it here and
    grows with the step's tokens in :meth:`Deployment.weight_read_bytes`."""
    f = load_factors()
    gen, gemm = f.generation(sm), f.gemm(sm, qformat)
    fmt = FORMATS[qformat]
    wb = fmt.weight_bytes if qformat != "full_prec" else dtype_bytes
    layers = -(-arch.num_hidden_layers // pp)
    hd, hidden = arch.head_dim, arch.hidden_size
    kv_heads = max(1, arch.num_key_value_heads // tp)
    attn_params = 2 * hidden * arch.num_attention_heads * hd // tp + 2 * hidden * kv_heads * hd
    one_expert = 3 * hidden * arch.expert_intermediate_size
    if arch.is_moe:
        expert_bytes = one_expert * wb / moe_tp
        per_rank = arch.num_local_experts // moe_ep
        top_read = min(arch.num_experts_per_tok, per_rank) * expert_bytes
        dense = max(0.0, read_bytes - layers * top_read)
        mlp_params = arch.num_experts_per_tok * one_expert / tp
        width = arch.num_experts_per_tok * arch.expert_intermediate_size / tp
    else:
        expert_bytes, per_rank, dense = 0.0, 0, float(read_bytes)
        mlp_params = one_expert / tp
        width = arch.expert_intermediate_size / tp
    kind = f.gemm_kind_by_format.get(qformat, "bf16")
    fp8_rate = gpu.fp8_tflops or gpu.bf16_tflops
    rate = {"fp8": fp8_rate, "w4a8": fp8_rate, "int8": 2 * gpu.bf16_tflops, "fp4": 2 * fp8_rate}.get(
        kind, gpu.bf16_tflops
    )
    return Deployment(
        gpu=gpu.name,
        sm=sm,
        qformat=qformat,
        tp=tp,
        pp=pp,
        layers=layers,
        hidden=hidden,
        heads_per_rank=arch.num_attention_heads // tp,
        head_dim=hd,
        mlp_width_per_rank=int(width),
        dense_read_bytes=dense,
        expert_bytes=expert_bytes,
        experts=arch.num_local_experts,
        experts_per_rank=per_rank,
        top_k=arch.num_experts_per_tok,
        moe_ep=moe_ep,
        gemm_flops_per_token=2.0 * layers * (attn_params + mlp_params),
        expert_flops_per_token=2.0 * layers * mlp_params if arch.is_moe else 0.0,
        lm_head_flops=2.0 * vocab_padded // tp * hidden,
        kv_bytes_per_token=kv_bytes_per_token,
        sliding_kv_bytes_per_token=sliding_kv_bytes_per_token,
        sliding_window=arch.sliding_window or 0,
        bandwidth_bytes_s=gpu.bandwidth_tb_s * 1e12,
        gemm_flops_s=rate * 1e12,
        attention_flops_s=(fp8_rate if fp8_fmha else gpu.bf16_tflops) * 1e12,
        max_num_tokens=max_num_tokens,
        gen=gen,
        gemm=gemm,
        link=f.link(gpu.link),
        pp_bubble=f.pp_bubble_per_stage,
    )
