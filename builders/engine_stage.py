"""The engine stage: run ``trtllm-build`` on a TensorRT-LLM checkpoint into a keyed, atomic output.

The engine is keyed by the checkpoint's own stage key, the build flags (paths left out), the
TensorRT-LLM and TensorRT versions and the GPU it is built on. trtllm-build writes into a temporary
sibling; its stdout and stderr go to ``trtllm-build.log`` there; on success the engine directory is
checked (config.json and one ``rank{N}.engine`` per rank), its manifest written, and it is renamed.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from swallow_trt.builders.engine_args import EngineSpec, trtllm_build_argv
from swallow_trt.builders.environment import BuildEnvironment
from swallow_trt.builders.quantize_stage import Reporter, SilentReporter
from swallow_trt.builders.stage import StageDir, stage_key
from swallow_trt.errors import ProcessFailed, ProcessFailure, StageFailed
from swallow_trt.proc import ManagedProcess, tail

LOG_NAME = "trtllm-build.log"
PATH_FLAGS = ("--checkpoint_dir", "--output_dir", "--input_timing_cache", "--output_timing_cache")


@dataclass(frozen=True)
class EngineResult:
    out: Path
    cached: bool
    manifest: dict[str, Any]


def build_flags(argv: list[str]) -> list[str]:
    """The argv without the paths: what decides the engine's content."""
    out: list[str] = []
    skip = False
    for a in argv[1:]:
        if skip:
            skip = False
            continue
        if a in PATH_FLAGS:
            skip = True
            continue
        out.append(a)
    return out


def overridden(spec: EngineSpec, engine_config: dict[str, Any] | None) -> list[str]:
    """Settings the engine's config.json has other than asked: the rules of engine_rules.py were
    meant to leave trtllm-build nothing to change, so each one is a drift from upstream to report."""
    build = (engine_config or {}).get("build_config") or {}
    plugin = build.get("plugin_config") or {}
    asked: dict[str, tuple[dict[str, Any], Any]] = {
        "context_fmha": (plugin, spec.context_fmha),
        "use_paged_context_fmha": (plugin, spec.use_paged_context_fmha),
        "use_fp8_context_fmha": (plugin, spec.use_fp8_context_fmha),
        "max_num_tokens": (build, spec.max_num_tokens),
    }
    return [
        f"{name}: asked {want}, the engine has {where[name]}"
        for name, (where, want) in asked.items()
        if name in where and where[name] != want
    ]


def run_engine_stage(
    spec: EngineSpec,
    checkpoint_manifest: dict[str, Any],
    env: BuildEnvironment,
    *,
    timeout_s: float | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> EngineResult:
    ui: Reporter = reporter or SilentReporter()
    out = spec.output_dir.absolute()
    gpu = {"name": env.gpus[0].name, "sm": env.gpus[0].sm, "count": len(env.gpus)} if env.gpus else None
    nominal = trtllm_build_argv(spec)
    inputs = {
        "stage": "engine",
        "checkpoint_key": checkpoint_manifest.get("key"),
        "flags": build_flags(nominal),
        "tensorrt_llm": env.tensorrt_llm,
        "tensorrt": env.tensorrt,
        "gpu": gpu,
    }
    key = stage_key(inputs)
    stage = StageDir(out)
    with stage.locked(on_wait=ui.warn):
        hit = stage.check_replaceable(key, force)
        if hit is not None:
            return EngineResult(out, True, hit)
        if spec.timing_cache is not None:
            spec.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        with stage.building(LOG_NAME) as temp:
            argv = trtllm_build_argv(
                replace(spec, output_dir=temp, checkpoint_dir=spec.checkpoint_dir.absolute())
            )
            argv[0] = env.trtllm_build or argv[0]
            log_path = temp / LOG_NAME
            ui.phase(f"building the engine: {shlex.join(argv)}")
            # This thread waits for the build, so the death signal, which follows it, is safe to set.
            build = ManagedProcess(
                argv, name="trtllm-build", log_path=log_path, timeout_s=timeout_s, tie_to_parent=True
            )
            last_note = [time.monotonic()]

            def note() -> None:
                if time.monotonic() - last_note[0] >= 60:
                    last_note[0] = time.monotonic()
                    ui.phase(f"still building ({(time.time() - started) / 60:.0f} min)")

            try:
                rc = build.start().wait(tick=note)
            except ProcessFailed as exc:
                exc.hint = "raise --build-timeout, or check the log for a stuck step"
                raise
            if rc != 0:
                raise build.failed(
                    ProcessFailure.EXITED,
                    hint="fix the cause and re-run; the engine directory was left untouched",
                )
            world = int((checkpoint_manifest.get("inputs") or {}).get("tp", 1)) * int(
                (checkpoint_manifest.get("inputs") or {}).get("pp", 1)
            )
            missing = [
                n
                for n in ["config.json", *(f"rank{r}.engine" for r in range(world))]
                if not (temp / n).is_file()
            ]
            if missing:
                raise StageFailed(
                    f"trtllm-build exited 0 but did not write {', '.join(missing)}: {shlex.join(argv)}",
                    "check the log; the engine directory was left untouched",
                    details=f"--- last lines of {LOG_NAME} ---\n{tail(log_path)}",
                )
            try:
                engine_config = json.loads((temp / "config.json").read_text())
            except (OSError, json.JSONDecodeError):
                engine_config = None
            changed = overridden(spec, engine_config)
            for change in changed:
                ui.warn(f"trtllm-build overrode {change} (chunked context follows the engine's config.json)")
            manifest = {
                "stage": "engine",
                "key": key,
                "inputs": inputs,
                "environment": {k: v for k, v in env.to_json().items() if k != "gpus"},
                "gpu": gpu,
                "checkpoint": {
                    "path": str(spec.checkpoint_dir.absolute()),
                    "key": checkpoint_manifest.get("key"),
                },
                "qformat": spec.qformat,
                "kv_cache_dtype": spec.kv_cache_dtype,
                "build_config": (engine_config or {}).get("build_config"),
                "overridden_by_trtllm_build": changed,
                "command": [a.replace(str(temp), str(out)) for a in argv],
                "timings": {"trtllm_build_s": time.time() - started},
            }
            final = stage.commit(temp, manifest, logs=(LOG_NAME,))
    return EngineResult(out, False, final)
