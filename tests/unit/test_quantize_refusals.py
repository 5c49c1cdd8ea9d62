"""quantize refuses bad requests in one line, before any heavy import or output directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_hf_config


def one_line_error(result: Any, code: int) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert " — " in lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def test_70b_refused_on_a_small_host(cli: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli(
        "quantize", "--model", "70b", "--fp8", "--out", str(out), env={"SWALLOW_TRT_HOST_RAM_GIB": "24"}
    )
    line = one_line_error(result, 3)
    assert "GiB of host RAM" in line
    assert "24.0 GiB" in line
    assert "--force" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("overrides", "args", "needle"),
    [
        ({"architectures": ["MixtralForCausalLM"], "num_local_experts": 8, "num_experts_per_tok": 2},
         ["--int4-awq"], "no AWQ for Mixtral"),
        ({}, ["--fp8", "--tp", "3"], "TP 3 does not divide"),
        ({}, ["--int4-awq", "--tp", "8"], "AWQ group size"),
        ({}, ["--fp8", "--pp", "3"], "PP 3 does not divide"),
        ({"architectures": ["MistralForCausalLM"]}, ["--qformat", "int8_sq"], "cannot be exported"),
        ({"architectures": ["GPT2LMHeadModel"]}, ["--fp8"], "not supported"),
        ({}, ["--fp8", "--target", "ampere"], "needs Ada (sm89) or Hopper"),
        ({}, ["--fp8", "--calib", "nope.jsonl"], "does not exist"),
        ({}, ["--fp8", "--calib-size", "0"], "--calib-size must be at least 1"),
        ({}, ["--fp8", "--kv-cache-dtype", "fp4"], "unknown --kv-cache-dtype"),
    ],
)  # fmt: skip
def test_invalid_requests(
    cli: Callable[..., Any], tmp_path: Path, overrides: dict[str, Any], args: list[str], needle: str
) -> None:
    ckpt = write_hf_config(tmp_path / "ckpt", hidden_size=512, intermediate_size=1024, num_hidden_layers=2,
                           num_attention_heads=8, num_key_value_heads=4, **overrides)  # fmt: skip
    out = tmp_path / "out"
    result = cli("quantize", "--model", str(ckpt), *args, "--out", str(out))
    assert needle in one_line_error(result, 2)
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))


def test_offline_hub_id_not_cached(cli: Callable[..., Any], tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = tmp_path / "out"
    result = cli("quantize", "--model", "8b", "--fp8", "--force", "--out", str(out), env=env)
    assert result.exit_code == 3
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    # Work had started (a progress line says so); the failure itself is one line.
    assert lines[0].startswith("• fetching")
    assert len(lines) == 2
    line = lines[1]
    assert line.startswith("error: ")
    assert "Llama-3.1-Swallow-8B-Instruct-v0.3" in line
    assert "HF_HUB_OFFLINE" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("tokyotech-llm/Qwen3-Swallow-8B-RL-v0.2-AWQ-INT4", "tokyotech-llm/Qwen3-Swallow-8B-RL-v0.2 with --int4-awq"),
        ("Qwen3-Swallow-30B-A3B-RL-v0.2-AWQ-INT4", "tokyotech-llm/Qwen3-Swallow-30B-A3B-RL-v0.2 with --fp8"),
        ("Qwen3-Swallow-32B-RL-v0.2-AWQ-INT4", "tokyotech-llm/Qwen3-Swallow-32B-RL-v0.2 with --int4-awq"),
        ("Qwen3-Swallow-32B-RL-v0.2-GPTQ-INT4", "made private"),
        ("gpt-oss-20b", "has no TensorRT engine model"),
        ("tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4", "has no TensorRT engine model"),
    ],
)  # fmt: skip
def test_2026_repos_refused(cli: Callable[..., Any], tmp_path: Path, model: str, needle: str) -> None:
    out = tmp_path / "out"
    result = cli("quantize", "--model", model, "--int4-awq", "--out", str(out))
    assert needle in one_line_error(result, 2)
    assert not out.exists()


def test_local_awq_desc_act_refused(cli: Callable[..., Any], tmp_path: Path) -> None:
    ckpt = write_hf_config(tmp_path / "ckpt", architectures=["Qwen3ForCausalLM"], head_dim=128,
                           quantization_config={"quant_method": "awq", "desc_act": True})  # fmt: skip
    out = tmp_path / "out"
    line = one_line_error(cli("quantize", "--model", str(ckpt), "--fp8", "--out", str(out)), 2)
    assert "desc_act true" in line
    assert "--int4-awq" in line
    assert not out.exists()
