"""``swallow-trt build``: plan and validate, check the machine, quantize (cached), build the engine
(cached), and write the build manifest. Packaging takes over from the engine directory. On the PyTorch
runtime (``--runtime pytorch``) there is no engine: see ``builders/pytorch_runtime.py``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swallow_trt.builders.engine_rules import timing_cache_name
from swallow_trt.builders.plan import Plan, PlanRequest, make_plan, stage_dirs
from swallow_trt.builders.pytorch_runtime import (
    check_pytorch_format,
    llm_api_options,
    pytorch_layout,
    run_pytorch_build,
)
from swallow_trt.builders.quantize_stage import (
    QuantizeRequest,
    QuantizeResult,
    Reporter,
    SilentReporter,
    check_calibration,
    run_quantize,
)
from swallow_trt.builders.stage import write_json_atomic
from swallow_trt.quantize.worker import CalibSettings

if TYPE_CHECKING:
    from swallow_trt.builders.environment import BuildEnvironment


@dataclass(frozen=True)
class BuildRequest:
    plan: PlanRequest
    calibration: CalibSettings = field(default_factory=CalibSettings)
    revision: str | None = None
    allow_pickle: bool = False
    force: bool = False
    build_timeout_s: float | None = None
    dry_run: bool = False


@dataclass
class BuildResult:
    plan: Plan
    dry_run: bool
    checkpoint: QuantizeResult | None = None
    engine: Any = None  # EngineResult (imported lazily with the engine stage)
    manifest_path: Path | None = None
    # runtime pytorch: a PytorchLayout in a dry run, a PytorchBuildResult after a build
    pytorch: Any = None
    request: PlanRequest | None = None
    timings: dict[str, float] = field(default_factory=dict)


def build_timing_cache(planned: Path | None, env: BuildEnvironment) -> Path | None:
    """The plan keys the timing cache by a GPU of the target and the pinned TensorRT; the build knows
    the GPU and TensorRT it really has. With TensorRT's version unknown no cache is shared: TensorRT
    refuses a cache from another version (ignore_mismatch=False) rather than ignoring it."""
    if planned is None or not env.gpus or env.tensorrt is None:
        return None
    return planned.parent / timing_cache_name(env.gpus[0].name, env.gpus[0].sm, env.tensorrt)


def run_build(req: BuildRequest, reporter: Reporter | None = None) -> BuildResult:
    ui: Reporter = reporter or SilentReporter()
    check_calibration(req.calibration)
    plan = make_plan(req.plan)
    if plan.runtime == "pytorch":
        return _run_pytorch(req, plan, ui)
    if req.dry_run:
        return BuildResult(plan=plan, dry_run=True)

    from swallow_trt.builders.engine_stage import run_engine_stage
    from swallow_trt.builders.environment import check_build_environment, probe_environment

    ui.phase("checking the build environment (TensorRT-LLM, trtllm-build, GPUs)")
    env = probe_environment()
    check_build_environment(env, plan.profile, plan.world_size)
    dirs = stage_dirs(req.plan, plan.model, plan.profile, plan.qformat, plan.kv_cache_dtype, plan.tp, plan.pp)
    t0 = time.time()
    ui.phase(f"stage 1/2: quantize -> {dirs['checkpoint']}")
    ckpt = run_quantize(
        QuantizeRequest(
            model=req.plan.model,
            qformat=plan.qformat,
            kv_cache_dtype=plan.kv_cache_dtype,
            tp=plan.tp,
            pp=plan.pp,
            dtype=plan.dtype,
            calibration=req.calibration,
            out=dirs["checkpoint"],
            revision=req.revision,
            allow_pickle=req.allow_pickle,
            force=req.force,
        ),
        ui,
    )
    t1 = time.time()
    ui.phase(("cache hit: " if ckpt.cached else "checkpoint ready: ") + str(ckpt.out))
    ui.phase(f"stage 2/2: engine -> {dirs['engine']}")
    spec = replace(
        plan.engine,
        workers=max(1, min(plan.world_size, len(env.gpus))),
        timing_cache=build_timing_cache(plan.engine.timing_cache, env),
    )
    engine = run_engine_stage(
        spec, ckpt.manifest, env, timeout_s=req.build_timeout_s, force=req.force, reporter=ui
    )
    t2 = time.time()
    manifest_path = dirs["root"] / "build.json"
    write_json_atomic(
        manifest_path,
        {
            "model": plan.model.display_name,
            "target": plan.profile.name,
            "qformat": plan.qformat,
            "kv_cache_dtype": plan.kv_cache_dtype,
            "engine_settings": plan.settings.to_json(),
            "tp": plan.tp,
            "pp": plan.pp,
            "checkpoint": {"path": str(ckpt.out), "key": ckpt.manifest.get("key"), "cached": ckpt.cached},
            "engine": {"path": str(engine.out), "key": engine.manifest.get("key"), "cached": engine.cached},
            "environment": env.to_json(),
            "timings": {"quantize_s": t1 - t0, "engine_s": t2 - t1},
        },
    )
    return BuildResult(
        plan, False, ckpt, engine, manifest_path, timings={"quantize_s": t1 - t0, "engine_s": t2 - t1}
    )


def _run_pytorch(req: BuildRequest, plan: Plan, ui: Reporter) -> BuildResult:
    check_pytorch_format(plan)
    if req.dry_run:
        llm_api_options(plan)  # checked against the contract in a dry run too
        return BuildResult(plan=plan, dry_run=True, pytorch=pytorch_layout(req.plan, plan), request=req.plan)
    t0 = time.time()
    result = run_pytorch_build(req, plan, ui)
    return BuildResult(
        plan,
        False,
        manifest_path=result.layout.root / "build.json",
        timings={"build_s": time.time() - t0},
        pytorch=result,
        request=req.plan,
    )
