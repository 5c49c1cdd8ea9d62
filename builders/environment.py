"""What the engine build and the runtime need from the machine, read without importing TensorRT-LLM.

Engines are bound to the SM, TensorRT-LLM and TensorRT versions they were built with; serving an
engine with another version is the most common upstream failure, so the engine manifest records
them and :func:`check_engine_runtime` refuses a mismatch.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import dataclass, field
from typing import Any

from swallow_trt.errors import EnvironmentProblem
from swallow_trt.hw import DetectedGpu, detect_gpus
from swallow_trt.profiles import Profile

# TensorRT-LLM releases that still ship trtllm-build and the TensorRT engine backend.
ENGINE_ERA = ((1, 1), (1, 2))
DOCKER_HINT = (
    "build inside the pinned image: docker build -t swallow-trt . (see README, 'GPUs and the Docker image')"
)
TRTLLM_DISTS = ("tensorrt_llm", "tensorrt-llm")
TENSORRT_DISTS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu13_libs", "tensorrt_cu12_libs")


def _version(dists: tuple[str, ...]) -> str | None:
    for name in dists:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@dataclass(frozen=True)
class BuildEnvironment:
    tensorrt_llm: str | None
    tensorrt: str | None
    trtllm_build: str | None
    gpus: list[DetectedGpu] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "tensorrt_llm": self.tensorrt_llm,
            "tensorrt": self.tensorrt,
            "trtllm_build": self.trtllm_build,
            "gpus": [{"name": g.name, "sm": g.sm, "memory_mib": g.memory_mib} for g in self.gpus],
        }


def probe_environment() -> BuildEnvironment:
    return BuildEnvironment(
        tensorrt_llm=_version(TRTLLM_DISTS),
        tensorrt=_version(TENSORRT_DISTS),
        trtllm_build=shutil.which("trtllm-build"),
        gpus=detect_gpus(),
    )


def engine_era(version: str) -> bool:
    parts = version.split(".")
    try:
        major_minor = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return False
    return major_minor in ENGINE_ERA


def check_build_environment(env: BuildEnvironment, profile: Profile, world_size: int) -> None:
    """Refuse, with the reason and what to do, a machine that cannot build this engine."""
    if env.tensorrt_llm is None:
        raise EnvironmentProblem("TensorRT-LLM is not installed here", DOCKER_HINT)
    if not engine_era(env.tensorrt_llm):
        raise EnvironmentProblem(
            f"TensorRT-LLM {env.tensorrt_llm} has no TensorRT engine backend (trtllm-build exists in 1.1.x-1.2.x only)",
            DOCKER_HINT,
        )
    if env.trtllm_build is None:
        raise EnvironmentProblem(
            f"TensorRT-LLM {env.tensorrt_llm} is installed but trtllm-build is not on PATH", DOCKER_HINT
        )
    if not env.gpus:
        raise EnvironmentProblem(
            "no NVIDIA GPU detected (nvidia-smi); engines are built on the GPU they will run on",
            "run on the target machine with --gpus all, or use --dry-run to print the commands",
        )
    sm = env.gpus[0].sm
    if sm != profile.sm:
        raise EnvironmentProblem(
            f"detected {env.gpus[0].name} (sm{sm}) but target {profile.name} is sm{profile.sm}: "
            "an engine runs only on the SM it was built on",
            "build on the target GPUs, or pick the target that matches this machine (see `swallow-trt targets`)",
        )
    if len(env.gpus) < world_size:
        raise EnvironmentProblem(
            f"TP x PP = {world_size} needs {world_size} GPUs; {len(env.gpus)} detected",
            "run on a machine with enough GPUs, or lower --tp/--pp",
        )


def check_engine_runtime(manifest: dict[str, Any], env: BuildEnvironment) -> None:
    """Refuse to serve an engine built with another TensorRT-LLM/TensorRT version or on another SM."""
    built = manifest.get("environment") or {}
    for key, label in (("tensorrt_llm", "TensorRT-LLM"), ("tensorrt", "TensorRT")):
        want, have = built.get(key), getattr(env, key)
        if want and have and want != have:
            raise EnvironmentProblem(
                f"the engine was built with {label} {want}, this runtime has {have}",
                "rebuild the engine here (swallow-trt build), or serve it in the image it was built in",
            )
    want_sm = (manifest.get("gpu") or {}).get("sm")
    if want_sm and env.gpus and env.gpus[0].sm != want_sm:
        raise EnvironmentProblem(
            f"the engine was built for sm{want_sm}, this machine has {env.gpus[0].name} (sm{env.gpus[0].sm})",
            "rebuild the engine on this GPU generation",
        )
