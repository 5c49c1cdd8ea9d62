"""``swallow-trt plan``: will it fit, how fast will it go, and what exactly will run."""

from __future__ import annotations

from swallow_trt.cli.options import (
    PLAN_FLAGS,
    ConcurrencyOpt,
    IslOpt,
    JsonOpt,
    ModelFlags,
    OslOpt,
    RateOpt,
    SloTpotOpt,
    SloTtftOpt,
    model_flags,
)
from swallow_trt.cli.output import emit_json

HELP = """Check a model x format x parallelism x target before spending GPU hours.

Prints, per GPU of the target: weight memory, KV-cache bytes per token, the KV budget and how many
tokens and sequences it holds; the host RAM and disk the quantize stage needs; roofline floors for one
decode step and for prefill; and the exact commands of every later stage.

With --isl/--osl it leads with an estimate from the performance model (fitted to TensorRT-LLM's
published engine figures and aiconfigurator's measured kernels): TTFT, TPOT and output tokens/s at
max throughput (every request queued at once), at --concurrency C streams, or at --rate R requests/s,
and the max batch size it recommends for that workload (used in the printed commands). With
--slo-ttft-ms/--slo-tpot-ms it searches format x KV dtype x TP/PP x replicas x batch on the target's
GPUs and recommends the layout with the most tokens/s per GPU within the targets.

Examples:

  swallow-trt plan --model 70b --tp 4 --fp8 --target h100x4

  swallow-trt plan --model 8b --fp8 --target hopper --isl 1024 --osl 256 --concurrency 64

  swallow-trt plan --model 70b --target h100x4 --isl 1024 --osl 256 --slo-ttft-ms 500 --slo-tpot-ms 30

  swallow-trt plan --model 8b --int4-awq --target ampere-sm86 --max-seq-len 4096

  swallow-trt plan --model tokyotech-llm/Swallow-MX-8x7b-NVE-v0.1 --fp8 --tp 2 --target hopper --gpus 2 --json

  swallow-trt plan --model tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4 --target h100x4 --runtime pytorch
"""


@model_flags(PLAN_FLAGS)
def plan(
    flags: ModelFlags,
    isl: IslOpt = None,
    osl: OslOpt = None,
    concurrency: ConcurrencyOpt = None,
    rate: RateOpt = None,
    slo_ttft_ms: SloTtftOpt = None,
    slo_tpot_ms: SloTpotOpt = None,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.cli.plan_view import plan_to_json, render

    req = flags.plan_request()
    if (isl, osl, concurrency, rate, slo_ttft_ms, slo_tpot_ms) == (None,) * 6:
        # A plain plan: the performance model is not even imported (start-up, benchmarks/cli_startup.py).
        from swallow_trt.builders.plan import make_plan

        result = make_plan(req)
        emit_json(plan_to_json(result)) if as_json else render(result)
        return
    from swallow_trt.builders.estimate import workload_request
    from swallow_trt.cli import estimate_view

    work = workload_request(isl, osl, concurrency, rate, slo_ttft_ms, slo_tpot_ms)
    assert work is not None

    workload, slo = work
    if slo is not None:
        from swallow_trt.builders.slo import recommend

        found = recommend(req, workload, slo)
        emit_json(estimate_view.search_json(found)) if as_json else estimate_view.render_search(found)
        return
    from swallow_trt.builders.estimate import estimate_plan

    planned, est = estimate_plan(req, workload)
    if as_json:
        emit_json({**plan_to_json(planned), "estimate": est.to_json()})
        return
    estimate_view.render_estimate(est)
    render(planned)
