"""``swallow-trt build``: HF Swallow checkpoint -> TensorRT-LLM engine, end to end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from swallow_trt.cli.options import (
    BUILD_FLAGS,
    AllowPickleOpt,
    CalibLenOpt,
    CalibOpt,
    CalibSizeOpt,
    DryRunOpt,
    EvalLenOpt,
    EvalSamplesOpt,
    ForceOpt,
    JsonOpt,
    ModelFlags,
    RevisionOpt,
    SeedOpt,
    model_flags,
)
from swallow_trt.cli.output import ConsoleReporter, emit_json, out

if TYPE_CHECKING:
    from swallow_trt.builders.build import BuildResult
    from swallow_trt.builders.plan import PlanRequest

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

--runtime pytorch (the default for GPT-OSS, which has no engine model) builds no engine: it writes a
checkpoint the LLM API loads (ModelOpt's HF export for fp8/nvfp4; the HF checkpoint itself for
full_prec and GPT-OSS's MXFP4) and an LLM-API options YAML from the target profile, for trtllm-serve
or Triton's llmapi model:

  swallow-trt build --model tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4 --target h100x4 --dry-run

  swallow-trt build --model qwen3-30b-a3b --target hopper --runtime pytorch --fp8
"""


@model_flags(BUILD_FLAGS)
def build(
    flags: ModelFlags,
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
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.builders.build import BuildRequest, run_build
    from swallow_trt.errors import UsageError
    from swallow_trt.quantize.worker import CalibSettings

    if build_timeout is not None and build_timeout <= 0:
        raise UsageError(
            f"--build-timeout must be positive, got {build_timeout:g}", "pass a number of seconds"
        )
    req = BuildRequest(
        plan=flags.plan_request(),
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
    reporter = ConsoleReporter(quiet=as_json)
    try:
        result = run_build(req, reporter)
    finally:
        reporter.close()
    render(result, as_json)


def render_dry_run(result: BuildResult, as_json: bool) -> None:
    from swallow_trt.cli.plan_view import plan_to_json
    from swallow_trt.cli.plan_view import render as render_plan

    if result.pytorch is not None:
        render_pytorch_dry_run(result, as_json)
        return
    if as_json:
        emit_json({"dry_run": True, "plan": plan_to_json(result.plan)})
        return
    out("dry run: nothing is checked or run on this machine")
    out()
    render_plan(result.plan)


def pytorch_files(result: BuildResult) -> dict[str, object]:
    """The files and commands of the pytorch path, for build's and serve's dry runs."""
    from swallow_trt.builders.pytorch_runtime import llm_api_options, pytorch_commands

    plan, layout = result.plan, result.pytorch
    return {
        "checkpoint": {
            "path": str(layout.checkpoint) if layout.exported else layout.model_ref,
            "made_by": "ModelOpt unified HF export (export_hf_checkpoint)"
            if layout.exported
            else "none: loaded as it ships",
            "qformat": plan.qformat,
            "kv_cache_dtype": plan.kv_cache_dtype,
        },
        "options_file": str(layout.options),
        "options": llm_api_options(plan),
        "manifest": str(layout.root / "build.json"),
        "commands": pytorch_commands(plan_request_of(result), plan, layout),
    }


def plan_request_of(result: BuildResult) -> PlanRequest:
    assert result.request is not None
    return result.request


def render_pytorch_dry_run(result: BuildResult, as_json: bool) -> None:
    import yaml

    from swallow_trt.builders.plan import command_line
    from swallow_trt.cli.plan_view import plan_to_json
    from swallow_trt.cli.plan_view import render as render_plan

    files = pytorch_files(result)
    if as_json:
        emit_json({"dry_run": True, "runtime": "pytorch", "plan": plan_to_json(result.plan), **files})
        return
    out("dry run: nothing is checked or run on this machine")
    out()
    render_plan(result.plan)
    ckpt = files["checkpoint"]
    assert isinstance(ckpt, dict)
    out()
    out(f"checkpoint: {ckpt['path']}  ({ckpt['made_by']}; {ckpt['qformat']}, {ckpt['kv_cache_dtype']} KV)")
    out(f"options:    {files['options_file']}")
    for line in yaml.safe_dump(files["options"], sort_keys=False).splitlines():
        out(f"  {line}")
    out(f"manifest:   {files['manifest']}")
    out("commands:")
    commands = files["commands"]
    assert isinstance(commands, dict)
    for name, argv in commands.items():
        out(f"  {name}: {command_line(argv)}")


def render(result: BuildResult, as_json: bool) -> None:
    if result.pytorch is not None:
        render_pytorch(result, as_json)
        return
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


def render_pytorch(result: BuildResult, as_json: bool) -> None:
    from swallow_trt.builders.plan import command_line

    r, p = result.pytorch, result.plan
    ckpt = {"path": str(r.layout.checkpoint), "exported": r.layout.exported, "cached": r.cached}
    if as_json:
        emit_json({"dry_run": False, "runtime": "pytorch", "checkpoint": ckpt, "options_file": str(r.layout.options),
                   "manifest": str(result.manifest_path), "serve": r.serve_argv})  # fmt: skip
        return
    out(
        f"built {p.model.display_name} for {p.profile.name} (runtime pytorch): {p.qformat}, {p.kv_cache_dtype} KV, TP {p.tp} x PP {p.pp}"
    )
    how = "ModelOpt HF export" + (" (cache hit)" if r.cached else "") if r.layout.exported else "as it ships"
    out(f"  checkpoint: {r.layout.checkpoint} ({how})")
    out(f"  options:    {r.layout.options}")
    out(f"  manifest:   {result.manifest_path}")
    out(f"next: {command_line(r.serve_argv)}")
    out(f"  or: swallow-trt package --runtime pytorch --build {r.layout.root} --out {r.layout.repo}")
