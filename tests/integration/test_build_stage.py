"""``swallow-trt build`` end to end on CPU: the real plan, environment checks, quantize stage and engine
stage orchestration, with test stand-ins (tests/stubs) for what cannot run here: ``trtllm-build``,
``nvidia-smi`` and the TensorRT-LLM / TensorRT package metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("modelopt")

from tests.fixtures.tiny import make_checkpoint

pytestmark = pytest.mark.integration

STUBS = Path(__file__).resolve().parents[1] / "stubs"
FAST = ["--calib-size", "4", "--calib-max-seq-len", "32", "--eval-samples", "1", "--eval-seq-len", "32"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("build") / "Tiny-Swallow", "llama31")


def run(args: list[str], home: Path, *, site: bool = True, bin_dir: Path = STUBS / "bin", timeout: float = 300,
        **env_extra: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = dict(os.environ, SWALLOW_TRT_HOME=str(home), PATH=f"{bin_dir}:{os.environ['PATH']}", **env_extra)
    env["PYTHONPATH"] = str(STUBS / "site") if site else ""
    return subprocess.run(
        [sys.executable, "-m", "swallow_trt.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def build_args(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return [
        "build",
        "--model",
        str(ckpt),
        "--target",
        "h100x4",
        "--fp8",
        "--tp",
        "2",
        "--out",
        str(out),
        *FAST,
        *extra,
    ]


def recorded(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def engine_dir(out: Path) -> Path:
    return out / "Tiny-Swallow-fp8-kvfp8-tp2pp1" / "engine-h100x4"


def test_build_success_then_cache_hits(ckpt: Path, tmp_path: Path) -> None:
    out, record = tmp_path / "out", tmp_path / "argv.jsonl"
    first = run([*build_args(ckpt, out), "--json"], tmp_path, FAKE_TRTLLM_RECORD=str(record))
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["checkpoint"]["cached"] is False
    assert result["engine"]["cached"] is False
    [argv] = recorded(record)
    flags = dict(zip(argv[::2], argv[1::2], strict=False))
    assert flags["--workers"] == "2"
    assert flags["--use_fp8_context_fmha"] == "enable"
    assert flags["--gemm_plugin"] == "fp8"
    assert flags["--input_timing_cache"] == flags["--output_timing_cache"]
    assert flags["--input_timing_cache"].startswith(str(tmp_path))
    assert Path(flags["--checkpoint_dir"]) == Path(result["checkpoint"]["path"])
    engine = Path(result["engine"]["path"])
    assert engine == engine_dir(out).absolute()
    assert sorted(p.name for p in engine.glob("rank*.engine")) == ["rank0.engine", "rank1.engine"]
    manifest = json.loads((engine / "manifest.json").read_text())
    assert manifest["environment"]["tensorrt_llm"] == "1.2.1"
    assert manifest["environment"]["tensorrt"] == "10.13.3.9"
    assert manifest["gpu"] == {"name": "NVIDIA H100 80GB HBM3", "sm": 90, "count": 4}
    assert manifest["build_config"]["max_batch_size"] == 256
    assert manifest["command"][0].endswith("trtllm-build")
    assert manifest["command"][manifest["command"].index("--output_dir") + 1] == str(engine)
    assert (engine / "trtllm-build.log").is_file()
    build_json = json.loads(Path(result["manifest"]).read_text())
    assert build_json["engine"]["key"] == manifest["key"]

    again = run([*build_args(ckpt, out), "--json"], tmp_path, FAKE_TRTLLM_RECORD=str(record))
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["checkpoint"]["cached"] is True
    assert second["engine"]["cached"] is True
    assert len(recorded(record)) == 1, "a cache hit must not run trtllm-build"

    # Another engine flag: the checkpoint is reused, the engine rebuilt.
    other = run([*build_args(ckpt, out, "--max-batch-size", "64"), "--force", "--json"], tmp_path,
                FAKE_TRTLLM_RECORD=str(record))  # fmt: skip
    assert other.returncode == 0, other.stderr
    third = json.loads(other.stdout)
    assert third["checkpoint"]["cached"] is True
    assert third["engine"]["cached"] is False
    assert recorded(record)[-1][recorded(record)[-1].index("--max_batch_size") + 1] == "64"

    # The engine packaged for the tensorrtllm backend: limits from the engine, the tokenizer found
    # through the engine's and the checkpoint's manifests.
    repo = tmp_path / "repo"
    packaged = run(
        ["package", "--engine", str(engine), "--target", "h100x4", "--out", str(repo), "--json"], tmp_path
    )
    assert packaged.returncode == 0, packaged.stderr
    info = json.loads(packaged.stdout)
    assert info["backend"] == "tensorrtllm"
    assert info["engine"]["world_size"] == 2
    assert info["max_batch_size"] == 64
    assert info["engine"]["enable_chunked_context"] is True  # h100x4 builds with paged context FMHA
    assert (repo / "chat" / "tokenizer" / "tokenizer.json").is_file()
    too_many = run(
        ["package", "--engine", str(engine), "--max-batch-size", "65", "--out", str(tmp_path / "r2")],
        tmp_path,
    )
    assert too_many.returncode == 2
    assert "exceeds the engine's max_batch_size 64" in too_many.stderr
    # No Triton with the tensorrtllm backend on this machine: serve says so before starting anything.
    served = run(["serve", "--repo", str(repo)], tmp_path)
    assert served.returncode == 3
    assert "needs a tritonserver with the tensorrtllm backend" in served.stderr


def test_build_failure_shows_command_and_log_tail(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run(build_args(ckpt, out), tmp_path, FAKE_TRTLLM_MODE="fail")
    assert res.returncode == 1
    assert "error: trtllm-build exited with code 1: " in res.stderr
    assert "--checkpoint_dir" in res.stderr  # the exact command
    assert "out of memory while building layer 0" in res.stderr  # the log tail
    assert "Traceback" not in res.stderr
    engine = engine_dir(out)
    assert not engine.exists()
    assert not list(engine.parent.glob(".engine-h100x4.tmp-*"))
    failed_log = engine.parent / "engine-h100x4.failed.log"
    assert "out of memory" in failed_log.read_text()
    # The quantize stage finished and is kept: the next run starts at the engine.
    assert (out / "Tiny-Swallow-fp8-kvfp8-tp2pp1" / "checkpoint" / "manifest.json").is_file()


def test_build_exits_0_without_engines_is_a_failure(ckpt: Path, tmp_path: Path) -> None:
    res = run(build_args(ckpt, tmp_path / "out"), tmp_path, FAKE_TRTLLM_MODE="noengine")
    assert res.returncode == 1
    assert "did not write rank0.engine, rank1.engine" in res.stderr
    assert not engine_dir(tmp_path / "out").exists()


def test_build_timeout_stops_trtllm_build(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # run()'s own timeout is the bound against a hang; the message proves --build-timeout fired.
    res = run([*build_args(ckpt, out), "--build-timeout", "3"], tmp_path, FAKE_TRTLLM_MODE="hang")
    assert res.returncode == 1
    assert "did not finish within 3 s" in res.stderr
    assert not engine_dir(out).exists()
    left = subprocess.run(
        ["pgrep", "-f", f"stubs/bin/trtllm-build --checkpoint_dir {out.absolute()}"],
        capture_output=True,
        text=True,
    )
    assert left.stdout.strip() == "", "the hung trtllm-build was left running"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"site": False}, "TensorRT-LLM is not installed here"),
        ({"FAKE_GPU": "NVIDIA L40S, 8.9, 46068"}, "(sm89) but target h100x4 is sm90"),
        ({"FAKE_GPU_COUNT": "1"}, "needs 2 GPUs; 1 detected"),
        ({"FAKE_GPU_COUNT": "0"}, "no NVIDIA GPU detected"),
    ],
)
def test_environment_refusals(ckpt: Path, tmp_path: Path, kwargs: dict[str, Any], needle: str) -> None:
    out = tmp_path / "out"
    res = run(build_args(ckpt, out), tmp_path, **kwargs)
    assert res.returncode == 3, res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith("• ")]
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]
    assert not out.exists(), "environment checks come before any stage writes"


def test_missing_trtllm_build_binary(ckpt: Path, tmp_path: Path) -> None:
    only_smi = tmp_path / "bin"
    only_smi.mkdir()
    (only_smi / "nvidia-smi").symlink_to(STUBS / "bin" / "nvidia-smi")
    env_path = f"{only_smi}:{Path(sys.executable).parent}:/usr/bin:/bin"
    res = subprocess.run(
        [sys.executable, "-m", "swallow_trt.cli.main", *build_args(ckpt, tmp_path / "out")],
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH=env_path, PYTHONPATH=str(STUBS / "site"), SWALLOW_TRT_HOME=str(tmp_path)),
        timeout=120,
    )
    assert res.returncode == 3
    assert "trtllm-build is not on PATH" in res.stderr
    assert "docker build" in res.stderr
