"""``swallow-trt plan``: will it fit, how fast can it go at best, and what exactly will run."""

from __future__ import annotations

from swallow_trt.cli.options import PLAN_FLAGS, JsonOpt, ModelFlags, model_flags
from swallow_trt.cli.output import emit_json

HELP = """Check a model x format x parallelism x target before spending GPU hours.

Prints, per GPU of the target: weight memory, KV-cache bytes per token, the KV budget and how many
tokens and sequences it holds; the host RAM and disk the quantize stage needs; roofline floors for one
decode step and for prefill, and the throughput ceiling they imply; and the exact commands of every
later stage. Floors are lower bounds from bandwidth and peak TFLOPS: real latencies are higher.

Examples:

  swallow-trt plan --model 70b --tp 4 --fp8 --target h100x4

  swallow-trt plan --model 8b --int4-awq --target ampere-sm86 --max-seq-len 4096

  swallow-trt plan --model tokyotech-llm/Swallow-MX-8x7b-NVE-v0.1 --fp8 --tp 2 --target hopper --gpus 2 --json

  swallow-trt plan --model qwen3-30b-a3b --fp8 --target ada

  swallow-trt plan --model tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4 --target h100x4 --runtime pytorch
"""


@model_flags(PLAN_FLAGS)
def plan(flags: ModelFlags, as_json: JsonOpt = False) -> None:
    from swallow_trt.builders.plan import make_plan
    from swallow_trt.cli.plan_view import plan_to_json, render

    result = make_plan(flags.plan_request())
    if as_json:
        emit_json(plan_to_json(result))
    else:
        render(result)
