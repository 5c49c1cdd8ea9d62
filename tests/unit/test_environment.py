"""Build-environment checks and the engine/runtime match (pure: facts passed in, nothing probed)."""

from __future__ import annotations

import re

import pytest

from swallow_trt.builders.environment import (
    BuildEnvironment,
    check_build_environment,
    check_engine_runtime,
    engine_era,
)
from swallow_trt.errors import EnvironmentProblem
from swallow_trt.hw import DetectedGpu, parse_nvidia_smi
from swallow_trt.profiles import load_shipped

H100 = DetectedGpu("NVIDIA H100 80GB HBM3", 90, 81559)


def env(
    trtllm: str | None = "1.2.1", gpus: int = 4, build: str | None = "/usr/local/bin/trtllm-build"
) -> BuildEnvironment:
    return BuildEnvironment(tensorrt_llm=trtllm, tensorrt="10.13.3.9", trtllm_build=build, gpus=[H100] * gpus)


def test_engine_era_versions() -> None:
    assert engine_era("1.2.1")
    assert engine_era("1.1.0")
    assert engine_era("1.2.0rc6")
    assert not engine_era("1.3.0")
    assert not engine_era("0.21.0")
    assert not engine_era("garbage")


def test_good_environment_passes() -> None:
    check_build_environment(env(), load_shipped("h100x4"), 4)


@pytest.mark.parametrize(
    ("environment", "target", "world", "needle"),
    [
        (env(trtllm=None), "hopper", 1, "not installed"),
        (env(trtllm="1.3.0"), "hopper", 1, "has no TensorRT engine backend"),
        (env(build=None), "hopper", 1, "not on PATH"),
        (env(gpus=0), "hopper", 1, "no NVIDIA GPU"),
        (env(), "ada", 1, "target ada is sm89"),
        (env(gpus=2), "h100x4", 4, "needs 4 GPUs; 2 detected"),
    ],
)
def test_refusals(environment: BuildEnvironment, target: str, world: int, needle: str) -> None:
    with pytest.raises(EnvironmentProblem, match=needle) as info:
        check_build_environment(environment, load_shipped(target), world)
    assert info.value.hint
    assert info.value.exit_code == 3


def test_engine_runtime_mismatch() -> None:
    manifest = {"environment": {"tensorrt_llm": "1.2.1", "tensorrt": "10.13.3.9"}, "gpu": {"sm": 90}}
    check_engine_runtime(manifest, env())
    with pytest.raises(
        EnvironmentProblem, match=re.escape("built with TensorRT-LLM 1.2.1, this runtime has 1.1.0")
    ):
        check_engine_runtime(manifest, env(trtllm="1.1.0"))
    ada = BuildEnvironment("1.2.1", "10.13.3.9", None, [DetectedGpu("NVIDIA L40S", 89, 46068)])
    with pytest.raises(EnvironmentProblem, match="built for sm90"):
        check_engine_runtime(manifest, ada)


def test_parse_nvidia_smi() -> None:
    text = "NVIDIA H100 80GB HBM3, 9.0, 81559\nNVIDIA A10, 8.6, 23028\n\ngarbage line\n"
    assert parse_nvidia_smi(text) == [H100, DetectedGpu("NVIDIA A10", 86, 23028)]
