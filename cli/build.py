"""``swallow-trt build``: HF Swallow checkpoint -> TensorRT-LLM engine, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from swallow_trt.cli.options import (
    AllowPickleOpt,
    CalibLenOpt,
    CalibOpt,
    CalibSizeOpt,
    DtypeOpt,
    EvalLenOpt,
    EvalSamplesOpt,
    ForceOpt,
    Fp8Opt,
    GpusOpt,
    Int4AwqOpt,
    JsonOpt,
    KvOpt,
    MaxBatchOpt,
    MaxInputOpt,
    MaxSeqOpt,
    MaxTokensOpt,
    ModelOpt,
    OutRootOpt,
    PpOpt,
    ProfileOpt,
    QformatOpt,
    RevisionOpt,
    SeedOpt,
    TargetOpt,
    TpOpt,
)
from swallow_trt.cli.output import emit_json, guarded, out

if TYPE_CHECKING:
    from swallow_trt.builders.build import BuildResult

HELP = """Build a TensorRT-LLM engine for a Swallow model: plan and validate, check the machine,
quantize (cached), run trtllm-build (cached), and write the build manifest.

Engines need the TensorRT-LLM 1.2.x image (the last release line with trtllm-build) and the GPUs
they will run on: an engine runs only on the SM, TensorRT-LLM and TensorRT versions it was built
with. --target defaults to the GPUs detected; give it when there are none. --dry-run checks nothing
on the machine and prints the plan and every command.

Examples:

  swallow-trt build --model 70b --tp 4 --fp8

  swallow-trt build --model 70b --tp 4 --fp8 --target h100x4 --dry-run

  swallow-trt build --model 8b --int4-awq --target ampere-sm86 --max-seq-len 4096 --out /models/out
"""


@guarded
def build(
    model: ModelOpt,
    target: TargetOpt = None,
    profile: ProfileOpt = None,
    tp: TpOpt = None,
    pp: PpOpt = None,
    fp8: Fp8Opt = False,
    int4_awq: Int4AwqOpt = False,
    qformat: QformatOpt = None,
    kv_cache_dtype: KvOpt = None,
    dtype: DtypeOpt = None,
    gpus: GpusOpt = None,
    max_batch_size: MaxBatchOpt = None,
    max_input_len: MaxInputOpt = None,
    max_seq_len: MaxSeqOpt = None,
    max_num_tokens: MaxTokensOpt = None,
    calib: CalibOpt = "ja",
    calib_size: CalibSizeOpt = 512,
    calib_max_seq_len: CalibLenOpt = 512,
    seed: SeedOpt = 0,
    eval_samples: EvalSamplesOpt = 8,
    eval_seq_len: EvalLenOpt = 256,
    revision: RevisionOpt = None,
    allow_pickle: AllowPickleOpt = False,
    force: ForceOpt = False,
    build_timeout: Annotated[
        float | None, typer.Option("--build-timeout", help="Stop trtllm-build after this many seconds.")
    ] = None,
    out_root: OutRootOpt = Path("swallow-trt-out"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and every command; check and run nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.builders.build import BuildRequest, run_build
    from swallow_trt.builders.plan import PlanRequest, choose_qformat
    from swallow_trt.errors import UsageError
    from swallow_trt.quantize.worker import CalibSettings

    if build_timeout is not None and build_timeout <= 0:
        raise UsageError(
            f"--build-timeout must be positive, got {build_timeout:g}", "pass a number of seconds"
        )
    req = BuildRequest(
        plan=PlanRequest(
            model=model,
            target=target,
            profile_path=profile,
            gpus=gpus,
            tp=tp,
            pp=pp,
            qformat=choose_qformat(fp8, int4_awq, qformat),
            kv_cache_dtype=kv_cache_dtype.lower() if kv_cache_dtype else None,
            dtype=dtype,
            max_batch_size=max_batch_size,
            max_input_len=max_input_len,
            max_seq_len=max_seq_len,
            max_num_tokens=max_num_tokens,
            out=out_root,
        ),
        calibration=CalibSettings(calib, calib_size, calib_max_seq_len, seed, eval_samples, eval_seq_len),
        revision=revision,
        allow_pickle=allow_pickle,
        force=force,
        build_timeout_s=build_timeout,
        dry_run=dry_run,
    )
    if dry_run:
        result = run_build(req)
        render_dry_run(result, as_json)
        return
    from swallow_trt.cli.quantize import ConsoleReporter

    reporter = ConsoleReporter(quiet=as_json)
    try:
        result = run_build(req, reporter)
    finally:
        reporter.close()
    render(result, as_json)


def render_dry_run(result: BuildResult, as_json: bool) -> None:
    from swallow_trt.cli.plan import plan_to_json
    from swallow_trt.cli.plan import render as render_plan

    if as_json:
        emit_json({"dry_run": True, "plan": plan_to_json(result.plan)})
        return
    out("dry run: nothing is checked or run on this machine")
    out()
    render_plan(result.plan)


def render(result: BuildResult, as_json: bool) -> None:
    assert result.checkpoint is not None
    assert result.engine is not None
    if as_json:
        emit_json(
            {
                "dry_run": False,
                "checkpoint": {"path": str(result.checkpoint.out), "cached": result.checkpoint.cached},
                "engine": {"path": str(result.engine.out), "cached": result.engine.cached},
                "manifest": str(result.manifest_path),
                "engine_settings": result.plan.settings.to_json(),
                "timings": result.timings,
            }
        )
        return
    p = result.plan
    out(
        f"built {p.model.display_name} for {p.profile.name}: {p.qformat}, {p.kv_cache_dtype} KV, TP {p.tp} x PP {p.pp}"
    )
    out(f"  checkpoint: {result.checkpoint.out}{' (cache hit)' if result.checkpoint.cached else ''}")
    out(f"  engine:     {result.engine.out}{' (cache hit)' if result.engine.cached else ''}")
    out(f"  manifest:   {result.manifest_path}")
    c = p.settings.chunked_context
    out(f"  chunked context {'on' if c.value else 'off'}: {c.reason}")
    out(
        "next: package the engine directory into a Triton model repository (swallow-trt package is not in this version yet)"
    )
