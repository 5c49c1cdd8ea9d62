"""The SLO search of ``plan --slo-ttft-ms/--slo-tpot-ms``: which format, KV dtype, TP/PP, replicas and
max batch serve a workload within a TTFT/TPOT target on the target's GPUs, and at what throughput.

Every layout is planned for real (:func:`~swallow_trt.builders.plan.make_plan`: the same fit rules and
memory arithmetic as ``plan``), so a layout that does not fit is never a candidate; each fitting one is
run through the performance model (:mod:`swallow_trt.perf.model`) over a grid of max batch sizes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from swallow_trt.builders.estimate import (
    MAX_BATCH_CAP,
    Slo,
    Workload,
    check_workload,
    deployment_for,
    model_context,
    pick_gpu,
    sequences_fit,
)
from swallow_trt.builders.plan import Plan, PlanRequest, command_line, load_target, make_plan, valid_tps
from swallow_trt.errors import SwallowTrtError, UsageError
from swallow_trt.perf.model import Deployment, Point, batch_grid, closed_loop, open_loop
from swallow_trt.quantize.formats import (
    FORMATS,
    FORMATS_BY_CLASS,
    KV_BY_CLASS,
    KV_BY_SM,
    PYTORCH_FORMATS_BY_CLASS,
)
from swallow_trt.registry import resolve_model

MAX_PP = 4


@dataclass(frozen=True)
class Candidate:
    qformat: str
    kv_cache_dtype: str
    tp: int
    pp: int
    replicas: int
    concurrency: float  # per replica
    max_batch_size: int
    point: Point  # one replica
    meets_slo: bool
    excess: float  # relative excess over the SLO: <= 0 meets it (more negative: more headroom)
    commands: dict[str, list[str]]

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.replicas

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.point.output_tokens_per_s * self.replicas / self.gpus

    def label(self) -> str:
        return f"{self.qformat} kv {self.kv_cache_dtype} TP{self.tp} PP{self.pp} x {self.replicas}"

    def to_json(self) -> dict[str, Any]:
        p = self.point
        return {
            "qformat": self.qformat,
            "kv_cache_dtype": self.kv_cache_dtype,
            "tp": self.tp,
            "pp": self.pp,
            "replicas": self.replicas,
            "gpus": self.gpus,
            "concurrency": round(self.concurrency, 2),
            "max_batch_size": self.max_batch_size,
            "ttft_ms": round(p.ttft_s * 1e3, 3),
            "tpot_ms": round(p.tpot_s * 1e3, 3),
            "output_tokens_per_s": round(p.output_tokens_per_s * self.replicas, 1),
            "output_tokens_per_s_per_gpu": round(self.tokens_per_s_per_gpu, 1),
            "requests_per_s": round(p.requests_per_s * self.replicas, 3),
            "meets_slo": self.meets_slo,
            "slo_excess": round(max(self.excess, 0.0), 4),
            "commands": {k: {"argv": v, "line": command_line(v)} for k, v in self.commands.items()},
        }


@dataclass(frozen=True)
class SearchResult:
    workload: Workload
    slo: Slo
    target: str
    gpu: str
    gpu_count: int
    candidates: list[Candidate]
    recommended: Candidate | None
    reason: str  # why the recommendation wins, or why there is none
    nearest_miss: Candidate | None
    layouts_tried: int
    layouts_fitting: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        w = self.workload
        return {
            "isl": w.isl,
            "osl": w.osl,
            "rate": w.rate,
            "slo": {"ttft_ms": self.slo.ttft_ms, "tpot_ms": self.slo.tpot_ms},
            "target": self.target,
            "gpu": self.gpu,
            "gpu_count": self.gpu_count,
            "recommended": self.recommended.to_json() if self.recommended else None,
            "reason": self.reason,
            "nearest_miss": self.nearest_miss.to_json() if self.nearest_miss else None,
            "candidates": [c.to_json() for c in self.candidates],
            "layouts_tried": self.layouts_tried,
            "layouts_fitting": self.layouts_fitting,
            "search_seconds": round(self.seconds, 3),
        }


def _layouts(req: PlanRequest, gpu_count: int, tps: list[int]) -> list[tuple[int, int]]:
    pps = [req.pp] if req.pp else [p for p in (1, 2, 4) if p <= MAX_PP]
    tps = [req.tp] if req.tp else tps
    return [(t, p) for t in tps for p in pps if t * p <= gpu_count]


def _best_for_layout(
    d: Deployment, w: Workload, slo: Slo, fit: int, pp: int, max_replicas: int
) -> tuple[int, int, Point] | None:
    """(replicas, max batch, point of one replica): meeting the SLO at the most tokens/s/GPU (closed
    loop), or with the fewest replicas that carry ``w.rate``; else the smallest miss."""
    limit = min(fit, max(1, MAX_BATCH_CAP // pp))
    grid = batch_grid(limit)
    best: tuple[float, int, int, Point] | None = None  # (score, replicas, batch, point)
    if w.rate is None:
        for b in grid:
            p = closed_loop(d, w.isl, w.osl, b)
            ex = slo.excess(p)
            score = p.output_tokens_per_s if ex <= 0 else -ex
            if best is None or score > best[0]:
                best = (score, max_replicas, b, p)
        if best is None:
            return None
        # Refine between the best grid batch and the next one, in steps of 8.
        above = [g for g in grid if g > best[2]]
        if best[0] > 0 and above:
            for b in range(best[2] + 8, above[0], 8):
                p = closed_loop(d, w.isl, w.osl, b)
                if slo.excess(p) <= 0 and p.output_tokens_per_s > best[0]:
                    best = (p.output_tokens_per_s, max_replicas, b, p)
        return best[1], best[2], best[3]
    for k in range(1, max_replicas + 1):
        found = open_loop(d, w.isl, w.osl, w.rate / k, limit)
        if found is None:
            continue
        p = found
        # Room for the bursts of Poisson arrivals: twice the mean in flight, within what fits.
        b = min(limit, next((g for g in grid if g >= 2 * p.concurrency), limit))
        ex = slo.excess(p)
        score = 1.0 / k if ex <= 0 else -ex - k
        if best is None or score > best[0]:
            best = (score, k, b, p)
        if ex <= 0:
            break
    return None if best is None else (best[1], best[2], best[3])


def recommend(req: PlanRequest, workload: Workload, slo: Slo, *, top: int = 8) -> SearchResult:
    """Search format x KV-cache dtype x TP/PP x replicas x max batch on the target's GPUs.

    ``req`` names the model and target (and optionally ``gpu``, ``gpus``; a ``qformat``,
    ``kv_cache_dtype``, ``tp`` or ``pp`` it sets is held fixed). Without ``workload.rate`` every
    layout uses all the GPUs (``gpus // (tp x pp)`` replicas) and is ranked by output tokens/s per GPU at
    the largest batch that meets ``slo``; with a rate, by the fewest GPUs that carry it within ``slo``.
    Returns every fitting layout best first (``candidates``, each with its build and serve commands),
    the best that meets the SLO (``recommended``) or None with the reason and the nearest miss.
    """
    t0 = time.perf_counter()
    if slo.ttft_ms is None and slo.tpot_ms is None:
        raise UsageError("the SLO search needs a target", "pass --slo-ttft-ms and/or --slo-tpot-ms")
    for name, v in (("--slo-ttft-ms", slo.ttft_ms), ("--slo-tpot-ms", slo.tpot_ms)):
        if v is not None and not v > 0:
            raise UsageError(
                f"{name} must be above 0, got {v:g}", f"pass a latency target in ms, e.g. {name} 500"
            )
    if workload.concurrency is not None:
        raise UsageError(
            "--concurrency with an SLO search: the search picks the batch itself",
            "drop --concurrency, or pass --rate to size for a request rate",
        )
    check_workload(workload)
    profile = load_target(req)
    model = resolve_model(req.model)
    arch = model.arch
    gpu_count = req.gpus or profile.gpu_count
    base = replace(req, gpus=gpu_count, max_batch_size=None, max_input_len=workload.isl,
                   max_seq_len=workload.isl + workload.osl)  # fmt: skip
    # The engine's formats for the architecture, and the PyTorch runtime's where it has its own (GPT-OSS,
    # Qwen3): make_plan picks the runtime (`--runtime auto` unless given) and refuses what cannot run.
    known = (*FORMATS_BY_CLASS.get(arch.hf_class, ()), *PYTORCH_FORMATS_BY_CLASS.get(arch.hf_class, ()))
    formats = [req.qformat] if req.qformat else [
        f for f in dict.fromkeys(known) if f in profile.formats.supported or FORMATS[f].as_shipped
    ]  # fmt: skip
    kvs = [req.kv_cache_dtype] if req.kv_cache_dtype else [
        k for k in ("fp8", "int8", "auto") if k in KV_BY_SM.get(profile.sm, ("auto",)) and k in KV_BY_CLASS[arch.hf_class]
    ]  # fmt: skip
    found: list[Candidate] = []
    tried = 0
    fitting = 0
    first_plan: Plan | None = None
    for qformat in formats:
        for tp, pp in _layouts(req, gpu_count, valid_tps(arch, qformat, gpu_count)):
            for kv in kvs:
                tried += 1
                try:
                    plan = make_plan(
                        replace(base, qformat=qformat, kv_cache_dtype=kv, tp=tp, pp=pp), suggest=False
                    )
                except SwallowTrtError:
                    continue
                if first_plan is None:
                    first_plan = plan
                if workload.isl + workload.osl > model_context(plan):
                    raise UsageError(
                        f"--isl {workload.isl} + --osl {workload.osl} exceeds the {model_context(plan)}-token "
                        f"context of {plan.model.display_name}",
                        f"use --osl {max(1, model_context(plan) - workload.isl)} or less",
                    )
                g = pick_gpu(plan)
                fit = sequences_fit(plan, g, workload.isl, workload.osl)
                if fit < 1:
                    continue
                fitting += 1
                d = deployment_for(plan, g)
                best = _best_for_layout(d, workload, slo, fit, pp, gpu_count // (tp * pp))
                if best is None:
                    continue
                replicas, batch, p = best
                ex = slo.excess(p)
                found.append(Candidate(qformat, plan.kv_cache_dtype, tp, pp, replicas,
                                       p.concurrency, batch, p, ex <= 0, ex, {}))  # fmt: skip
    # One candidate per distinct layout (an "auto" KV request may resolve to the same dtype as another).
    unique: dict[tuple[str, str, int, int], Candidate] = {}
    for c in found:
        key = (c.qformat, c.kv_cache_dtype, c.tp, c.pp)
        if key not in unique or _rank(c) < _rank(unique[key]):
            unique[key] = c
    ranked = sorted(unique.values(), key=_rank)
    ranked = [_with_commands(base, c) for c in ranked[:top]] + ranked[top:]
    meeting = [c for c in ranked if c.meets_slo]
    recommended = meeting[0] if meeting else None
    misses = [c for c in ranked if not c.meets_slo]
    nearest = min(misses, key=lambda c: c.excess) if misses and recommended is None else None
    profile_gpu = first_plan.gpus[0].gpu.name if first_plan else profile.gpu(req.gpu)[0].name
    if not ranked:
        reason = f"no layout of {model.display_name} fits the {gpu_count} GPU(s) of {profile.name}"
    elif recommended is None:
        assert nearest is not None
        reason = (f"no layout meets {slo.text()}; nearest: {nearest.label()} at batch {nearest.max_batch_size}, "
                  f"TTFT {nearest.point.ttft_s * 1e3:.0f} ms, TPOT {nearest.point.tpot_s * 1e3:.1f} ms")  # fmt: skip
    else:
        # Compare with the best layout that differs in more than the KV-cache dtype.
        other = [
            c
            for c in meeting[1:]
            if (c.qformat, c.tp, c.pp) != (recommended.qformat, recommended.tp, recommended.pp)
        ]
        reason = _why(recommended, other[0] if other else None, workload, slo)
    return SearchResult(
        workload=workload,
        slo=slo,
        target=profile.name,
        gpu=profile_gpu,
        gpu_count=gpu_count,
        candidates=ranked[:top],
        recommended=recommended,
        reason=reason,
        nearest_miss=nearest,
        layouts_tried=tried,
        layouts_fitting=fitting,
        seconds=time.perf_counter() - t0,
    )


def _rank(c: Candidate) -> tuple[int, float, float]:
    # Meeting: most tokens/s per GPU first, then the most headroom; missing: the smallest excess first.
    return (0, -round(c.tokens_per_s_per_gpu, 1), c.excess) if c.meets_slo else (1, c.excess, 0.0)


def _with_commands(base: PlanRequest, c: Candidate) -> Candidate:
    try:
        plan = make_plan(replace(base, qformat=c.qformat, kv_cache_dtype=c.kv_cache_dtype, tp=c.tp, pp=c.pp,
                                 max_batch_size=c.max_batch_size), suggest=False)  # fmt: skip
    except SwallowTrtError:
        return c
    if plan.commands:
        return replace(c, commands=plan.commands)
    # The PyTorch runtime has no trtllm-build stages: its build and serve commands, same flags.
    where = ["--profile", str(base.profile_path)] if base.profile_path else ["--target", plan.profile.name]
    flags = [
        "--model", plan.model.hf_ref, *where, "--runtime", "pytorch", "--qformat", plan.qformat,
        "--kv-cache-dtype", plan.kv_cache_dtype, "--tp", str(plan.tp), "--pp", str(plan.pp), "--out", str(base.out),
    ]  # fmt: skip
    sizes = ["--max-batch-size", str(plan.max_batch_size), "--max-seq-len", str(plan.max_seq_len)]
    return replace(
        c,
        commands={
            "build": ["swallow-trt", "build", *flags, *sizes],
            "serve": ["swallow-trt", "serve", *flags],
        },
    )


def _why(win: Candidate, runner: Candidate | None, w: Workload, slo: Slo) -> str:
    p = win.point
    bind = "TPOT" if slo.tpot_ms is not None and (slo.ttft_ms is None or
                                                   p.tpot_s * 1e3 / slo.tpot_ms >= p.ttft_s * 1e3 / slo.ttft_ms) else "TTFT"  # fmt: skip
    text = (f"{win.label()} at batch {win.max_batch_size} gives {win.tokens_per_s_per_gpu:,.0f} tok/s/GPU within "
            f"{slo.text()} ({bind} is the limit)")  # fmt: skip
    if w.rate is not None:
        text = (f"{win.label()} carries {w.rate:g} req/s on {win.gpus} GPU(s) within {slo.text()} "
                f"({bind} is the limit)")  # fmt: skip
    if runner is not None and w.rate is not None:
        text += f"; the best other layout, {runner.label()}, needs {runner.gpus} GPU(s)"
        if runner.gpus == win.gpus:
            text += (
                f" and has less headroom (TPOT {runner.point.tpot_s * 1e3:.1f} vs {p.tpot_s * 1e3:.1f} ms)"
            )
    elif runner is not None:
        gain = (
            win.tokens_per_s_per_gpu / runner.tokens_per_s_per_gpu - 1 if runner.tokens_per_s_per_gpu else 0.0
        )
        text += f"; {gain:+.0%} over the best other layout, {runner.label()} at batch {runner.max_batch_size}"
        if win.qformat != runner.qformat:
            text += " (fewer bytes per weight and faster GEMMs)" if gain > 0 else ""
        elif win.tp != runner.tp:
            text += (" (more replicas beat the all-reduce)" if win.tp < runner.tp
                     else " (the KV cache of a wider TP holds a larger batch)")  # fmt: skip
    return text
