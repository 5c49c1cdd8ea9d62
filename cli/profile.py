"""``swallow-trt profile``: latency and throughput of a served model (closed or open loop)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from swallow_trt.cli.options import PROFILE_FLAGS, JsonOpt, ModelFlags, PlanModelOpt, model_flags
from swallow_trt.cli.output import emit_json, out, table

if TYPE_CHECKING:
    from swallow_trt.profiler.perf_report import Point

HELP = """Measure TTFT, TPOT, chunk gaps, end-to-end latency, output tokens/s, requests/s and goodput of a
served model over gRPC streaming (or an OpenAI-compatible API with --api openai), at several load points.

Closed loop (--concurrency: that many requests always in flight) or open loop (--request-rate: Poisson
arrivals; latencies count from each request's scheduled time, so queueing is not hidden). Prompts have
exactly --input-tokens tokens of Japanese text (the model's tokenizer; --dataset), and the output length
is forced to --output-tokens where the model allows it. Writes profile.json and requests.csv (every
request's timestamps) and PNG plots under --out. Targets: tensorrt_llm (token ids: engine time only),
chat (streaming chat model) and ensemble; with --api openai, streaming chat completions (SSE) of the
API's model (--repo: the repository it serves, for its chat format and tokenizer; the key, if any, from
SWALLOW_TRT_API_KEY). Definitions of every figure: README, "Profiling".

Examples:

  swallow-trt profile --url 127.0.0.1:8001 --model tensorrt_llm --concurrency 1,4,16,64

  swallow-trt profile --model chat --request-rate 2,8,32 --duration 60 --slo-ttft-ms 500 --slo-tpot-ms 50

  swallow-trt profile --model ensemble --concurrency 8 --input-tokens 1024 --output-tokens 128 --dataset prompts.jsonl

  swallow-trt profile --model tensorrt_llm --concurrency 1,8 --plan-model 8b --target hopper --fp8 --out prof/8b

  swallow-trt profile --api openai --url http://127.0.0.1:8000 --repo REPO --concurrency 1,16,64
"""


@model_flags(PROFILE_FLAGS, model=(PlanModelOpt, None))
def profile(
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="Triton gRPC HOST:PORT (default 127.0.0.1:8001); --api openai: http://HOST:PORT."
        ),
    ] = None,
    api: Annotated[
        str,
        typer.Option("--api", help="triton (gRPC) or openai (an OpenAI-compatible API, default :8000)."),
    ] = "triton",
    served_model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="tensorrt_llm (default), chat or ensemble; --api openai: the API's model."
        ),
    ] = None,
    concurrency: Annotated[
        str | None,
        typer.Option("--concurrency", "-c", help="Closed loop: requests in flight, e.g. 1,4,16,64."),
    ] = None,
    request_rate: Annotated[
        str | None,
        typer.Option("--request-rate", "-r", help="Open loop: Poisson arrivals per second, e.g. 2,8,32."),
    ] = None,
    input_tokens: Annotated[int, typer.Option("--input-tokens", help="Prompt length, tokens (exact).")] = 512,
    output_tokens: Annotated[
        int, typer.Option("--output-tokens", help="Output length, tokens (forced).")
    ] = 256,
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset", help="ja (shipped Japanese text), synthetic (random ids), or a .jsonl/.txt file."
        ),
    ] = "ja",
    num_requests: Annotated[
        int | None,
        typer.Option(
            "--num-requests",
            "-n",
            help="Requests per load point (default: max(32, 4 x concurrency) or 10 s of arrivals).",
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Seconds per load point instead of a count.")
    ] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Requests sent first and not measured.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Seed for prompts and arrival times.")] = 0,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Report directory (default: profile-MODEL-DATE).")
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option("--tokenizer", help="Tokenizer dir (default: the served chat model's tokenizer_dir)."),
    ] = None,
    repo: Annotated[
        Path | None,
        typer.Option(
            "--repo",
            help="The served repository, where its chat model's tokenizer_dir is found (default: for a "
            "server on this machine, the repository it was started with).",
        ),
    ] = None,
    slo_ttft_ms: Annotated[
        float | None, typer.Option("--slo-ttft-ms", help="Goodput SLO on TTFT, ms.")
    ] = None,
    slo_tpot_ms: Annotated[
        float | None, typer.Option("--slo-tpot-ms", help="Goodput SLO on TPOT, ms.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Client processes (default: 1 per 16 streams or 8 req/s, <= CPUs)."),
    ] = None,
    ramp_up: Annotated[
        float,
        typer.Option(
            "--ramp-up", help="Closed loop: start the streams evenly over this many seconds, not all at once."
        ),
    ] = 0.0,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", help="Seconds to wait for stragglers.")
    ] = 300.0,
    *,
    flags: ModelFlags,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG plots.")] = False,
    as_json: JsonOpt = False,
) -> None:
    from datetime import datetime

    from swallow_trt.errors import UsageError
    from swallow_trt.profiler.run import DEFAULT_MODEL, ProfileSpec, choose_mode, run_profile, summary_json

    mode, levels = choose_mode(concurrency, request_rate)
    plan = None
    if flags.model is not None:
        plan = flags.plan_request()
    elif flags != ModelFlags():
        raise UsageError(
            "--target/--tp/--fp8/--int4-awq/--qformat only shape the roofline floors",
            "add --plan-model MODEL",
        )
    spec = ProfileSpec(
        api=api,  # type: ignore[arg-type]  # the spec refuses anything but triton and openai
        url=url or "", model=served_model or "", mode=mode, levels=levels, input_tokens=input_tokens, output_tokens=output_tokens,
        dataset=dataset, num_requests=num_requests, duration_s=duration, warmup=warmup, seed=seed,
        out=out_dir or Path(f"profile-{served_model or DEFAULT_MODEL.get(api) or api}-{datetime.now():%Y%m%d-%H%M%S}"), tokenizer=tokenizer, repo=repo,
        slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, workers=workers, ramp_up_s=ramp_up, request_timeout_s=request_timeout,
        plan=plan, plots=not no_plots,
    )  # fmt: skip

    def progress(message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    result = run_profile(spec, on_point=None if as_json else _show_point, progress=progress)
    if as_json:
        emit_json(summary_json(result))
        return
    from swallow_trt.profiler.perf_report import overview_rows

    headers, rows = overview_rows(result.points)
    out(table(f"{result.meta['model']}: {input_tokens} input / {output_tokens} output tokens (ms)", headers, rows,
              right=set(range(1, len(headers)))))  # fmt: skip
    for f in result.files:
        out(f"wrote {f}")


def _show_point(p: Point) -> None:
    from swallow_trt.profiler.perf_report import point_lines, point_rows

    headers, rows = point_rows(p.summary)
    out(table(f"{p.label} ({p.mode} loop)", headers, rows, right=set(range(1, len(headers)))))
    for line in point_lines(p):
        out(line)
    out()
