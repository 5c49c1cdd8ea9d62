"""The PyTorch (LLM-API) runtime: every LLM-API key (nested too) and every trtllm-serve flag that
``build --runtime pytorch`` and ``serve --runtime pytorch`` emit is among TensorRT-LLM 1.2's names, as
recorded in the contract copy ``core/data/tensorrt-llm-1.2-llm-api.json``; the dry runs print the exact
files and commands; the refusals are one line, exit 2."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from swallow_trt.builders.plan import PlanRequest, make_plan
from swallow_trt.builders.pytorch_runtime import (
    cuda_graph_batch_sizes,
    llm_api_options,
    llm_args_problems,
    pytorch_commands,
    pytorch_layout,
    trtllm_serve_argv,
)
from swallow_trt.triton_repo.llmapi import model_yaml_problems
from tests.fixtures.cli import usage_error

CONTRACT: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "core" / "data" / "tensorrt-llm-1.2-llm-api.json").read_text()
)
FIELDS = CONTRACT["llm_args"]["fields"]
SERVE = CONTRACT["trtllm_serve"]

GPT_OSS_120B = "tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1"
GPT_OSS_120B_MXFP4 = "tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4"
QWEN3_30B = "tokyotech-llm/Qwen3-Swallow-30B-A3B-RL-v0.2"
CASES = [
    (GPT_OSS_120B, "h100x4"),
    (GPT_OSS_120B_MXFP4, "h100x4"),
    (QWEN3_30B, "hopper"),
    ("qwen3-8b", "hopper"),
    ("qwen3-32b", "h100x4"),
    ("qwen3-8b", "ada"),
    ("gpt-oss-20b", "hopper"),
]


def walk(options: Mapping[str, Any], fields: Mapping[str, Any], where: str = "") -> Iterator[tuple[str, Any, dict[str, Any] | None]]:  # fmt: skip
    """(path, value, contract spec or None) for every key, nested ones too (the test's own walker)."""
    for key, value in options.items():
        spec = fields.get(key)
        yield where + key, value, spec
        if spec is not None and "fields" in spec and isinstance(value, Mapping):
            yield from walk(value, spec["fields"], where + key + ".")


def plan_for(model: str, target: str, **kw: Any) -> tuple[Any, PlanRequest]:
    req = PlanRequest(model=model, target=target, runtime="pytorch", **kw)
    return make_plan(req), req


@pytest.mark.parametrize(("model", "target"), CASES)
def test_every_emitted_key_is_a_1_2_llm_api_argument(model: str, target: str) -> None:
    plan, _ = plan_for(model, target)
    options = llm_api_options(plan)
    seen = list(walk(options, FIELDS))
    unknown = [path for path, _, spec in seen if spec is None]
    assert not unknown, unknown
    for path, value, spec in seen:
        assert spec is not None
        if "values" in spec:
            assert value in spec["values"], (path, value)
    # The profile's settings, each under its 1.2 name.
    rt = plan.profile.runtime
    assert options["tensor_parallel_size"] == plan.tp
    assert options["pipeline_parallel_size"] == plan.pp
    assert options["max_batch_size"] == plan.max_batch_size
    assert options["max_num_tokens"] == plan.max_num_tokens
    assert options["max_seq_len"] == plan.max_seq_len
    assert options["enable_chunked_prefill"] is rt.enable_chunked_context
    kv = options["kv_cache_config"]
    assert kv["free_gpu_memory_fraction"] == rt.kv_cache_free_gpu_mem_fraction
    assert kv["enable_block_reuse"] is True
    assert kv["dtype"] == {"auto": "auto", "fp8": "fp8"}[plan.kv_cache_dtype]
    assert options["scheduler_config"]["capacity_scheduler_policy"] == rt.batch_scheduler_policy.upper()
    graphs = options["cuda_graph_config"]
    # 1.2 raises when batch_sizes and max_batch_size are both given and differ from its own list.
    assert "max_batch_size" not in graphs
    assert graphs["batch_sizes"] == sorted(graphs["batch_sizes"])
    assert graphs["batch_sizes"][-1] == plan.max_batch_size
    if plan.model.arch.is_moe:
        assert options["moe_expert_parallel_size"] * options["moe_tensor_parallel_size"] == plan.tp
    else:
        assert "moe_expert_parallel_size" not in options


def test_a_misspelt_key_nested_or_not_is_caught() -> None:
    assert llm_args_problems({"kv_cache_config": {"free_gpu_mem_fraction": 0.9}}) == [
        "kv_cache_config.free_gpu_mem_fraction: not an LLM-API argument of TensorRT-LLM 1.2"
    ]
    assert llm_args_problems({"tp_size": 2}) == ["tp_size: not an LLM-API argument of TensorRT-LLM 1.2"]
    assert llm_args_problems({"scheduler_config": {"capacity_scheduler_policy": "guaranteed_no_evict"}})
    assert not llm_args_problems({"cuda_graph_config": None})


@pytest.mark.parametrize("n", [1, 3, 8, 64, 100, 256])
def test_cuda_graph_batch_sizes(n: int) -> None:
    sizes = cuda_graph_batch_sizes(n)
    assert sizes[0] == 1
    assert sizes[-1] == n
    assert len(set(sizes)) == len(sizes)
    assert all(s & (s - 1) == 0 for s in sizes[:-1])


def flags_of(argv: list[str]) -> dict[str, str | None]:
    known = {a: n for n, s in SERVE["flags"].items() for a in [n, *s.get("aliases", [])]}
    out: dict[str, str | None] = {}
    i = 2
    while i < len(argv):
        name = known[argv[i]]  # KeyError: a flag 1.2 lacks
        if SERVE["flags"][name]["type"] == "flag":
            out[name] = None
            i += 1
        else:
            out[name] = argv[i + 1]
            i += 2
    return out


@pytest.mark.parametrize(("model", "target"), CASES)
def test_trtllm_serve_argv_uses_only_1_2_flags(model: str, target: str, tmp_path: Path) -> None:
    plan, req = plan_for(model, target, out=tmp_path)
    layout = pytorch_layout(req, plan)
    argv = trtllm_serve_argv(layout.model_ref, layout.options, plan)
    assert argv[0] == SERVE["command"]
    flags = flags_of(argv)
    for name, value in flags.items():
        spec = SERVE["flags"][name]
        if "values" in spec:
            assert value in spec["values"], (name, value)
    assert flags["--extra_llm_api_options"] == str(layout.options)
    assert flags["--backend"] == "pytorch"
    family = plan.model.registered.entry.family
    assert flags.get("--reasoning_parser") == SERVE["reasoning_by_family"][family]["reasoning_parser"]


def test_base_models_get_no_reasoning_parser(tmp_path: Path) -> None:
    plan, req = plan_for("tokyotech-llm/Qwen3-Swallow-8B-CPT-v0.2", "hopper", out=tmp_path)
    layout = pytorch_layout(req, plan)
    assert "--reasoning_parser" not in trtllm_serve_argv(layout.model_ref, layout.options, plan)


@pytest.mark.parametrize(("model", "target"), CASES[:3])
def test_llmapi_model_yaml_keys(model: str, target: str, tmp_path: Path) -> None:
    plan, _ = plan_for(model, target)
    doc = {"model": "/ckpt", **llm_api_options(plan)}
    doc["triton_config"] = {"max_batch_size": 0, "decoupled": True, "cancellation_check_period_ms": 100}
    assert model_yaml_problems(doc) == []
    assert set(doc["triton_config"]) <= set(CONTRACT["llmapi_model"]["model_yaml"]["triton_config"])
    assert model_yaml_problems({**doc, "triton_config": {"decoupled": True}}) == [
        "triton_config.max_batch_size: required"
    ]


# --- the CLI dry runs: GPT-OSS-Swallow-120B on h100x4 and Qwen3-Swallow-30B-A3B on hopper -----------


def dry_run(cli: Callable[..., Any], command: str, *args: str) -> dict[str, Any]:
    result = cli(command, "--runtime", "pytorch", "--dry-run", "--json", *args)
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_build_and_serve_dry_run_gpt_oss_120b_h100x4(cli: Callable[..., Any], tmp_path: Path) -> None:
    args = ("--model", GPT_OSS_120B_MXFP4, "--target", "h100x4", "--out", str(tmp_path))
    build = dry_run(cli, "build", *args)
    root = tmp_path.absolute() / "GPT-OSS-Swallow-120B-RL-v0.1-MXFP4-mxfp4-kvauto-tp4pp1"
    assert build["checkpoint"] == {
        "path": GPT_OSS_120B_MXFP4,
        "made_by": "none: loaded as it ships",
        "qformat": "mxfp4",
        "kv_cache_dtype": "auto",
    }
    assert build["options_file"] == str(root / "llm-api-options.yaml")
    assert build["options"]["tensor_parallel_size"] == 4
    assert build["commands"]["trtllm_serve"] == [
        "trtllm-serve", GPT_OSS_120B_MXFP4, "--backend", "pytorch", "--host", "0.0.0.0", "--port", "8000",
        "--extra_llm_api_options", str(root / "llm-api-options.yaml"),
    ]  # fmt: skip
    assert not [p for p, _, spec in walk(build["options"], FIELDS) if spec is None]
    serve = dry_run(cli, "serve", *args)
    assert serve["commands"]["trtllm_serve"] == build["commands"]["trtllm_serve"]
    assert serve["options"] == build["options"]
    assert serve["run"] == build["commands"]["trtllm_serve"]


def test_build_and_serve_dry_run_qwen3_30b_a3b_hopper(cli: Callable[..., Any], tmp_path: Path) -> None:
    args = ("--model", "qwen3-30b-a3b", "--target", "hopper", "--out", str(tmp_path))
    build = dry_run(cli, "build", *args)
    root = tmp_path.absolute() / "Qwen3-Swallow-30B-A3B-RL-v0.2-fp8-kvfp8-tp1pp1"
    assert build["checkpoint"]["path"] == str(root / "hf-checkpoint")
    assert build["checkpoint"]["qformat"] == "fp8"
    assert build["options"]["kv_cache_config"]["dtype"] == "fp8"
    assert build["options"]["moe_expert_parallel_size"] == 1
    assert build["commands"]["trtllm_serve"] == [
        "trtllm-serve", str(root / "hf-checkpoint"), "--backend", "pytorch", "--host", "0.0.0.0", "--port",
        "8000", "--extra_llm_api_options", str(root / "llm-api-options.yaml"), "--reasoning_parser", "qwen3",
    ]  # fmt: skip
    triton = dry_run(cli, "serve", *args, "--triton")
    assert triton["run"] == ["tritonserver", "--model-repository", str(root / "triton-repo-llmapi")]


def test_dry_run_text_shows_the_yaml(cli: Callable[..., Any], tmp_path: Path) -> None:
    result = cli("build", "--runtime", "pytorch", "--dry-run", "--model", "qwen3-30b-a3b", "--target", "hopper",
                 "--out", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    block = text.split("options:", 1)[1].split("manifest:", 1)[0]
    shown = yaml.safe_load("\n".join(line[2:] for line in block.splitlines()[1:]))
    plan, _ = plan_for("qwen3-30b-a3b", "hopper")
    assert shown == llm_api_options(plan)
    assert "trtllm-serve " in text
    assert "--reasoning_parser qwen3" in text


def test_commands_name_every_stage(tmp_path: Path) -> None:
    plan, req = plan_for(QWEN3_30B, "hopper", out=tmp_path)
    cmds = pytorch_commands(req, plan, pytorch_layout(req, plan))
    assert set(cmds) == {"build", "trtllm_serve", "package", "serve", "serve_triton"}


# --- refusals: one line, exit 2 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["build", "--model", GPT_OSS_120B, "--target", "h100x4", "--runtime", "turbo", "--dry-run"], "unknown --runtime"),
        (["build", "--model", GPT_OSS_120B, "--target", "h100x4", "--runtime", "engine", "--dry-run"], "no TensorRT engine model"),
        (["serve", "--model", GPT_OSS_120B, "--target", "h100x4", "--runtime", "turbo", "--dry-run"], "unknown --runtime"),
        (["build", "--model", QWEN3_30B, "--target", "hopper", "--runtime", "engine", "--dry-run"], "--runtime pytorch"),
        (["build", "--model", QWEN3_30B, "--target", "hopper", "--runtime", "pytorch", "--qformat", "nvfp4", "--dry-run"], "nvfp4"),
        (["build", "--model", QWEN3_30B, "--target", "hopper", "--runtime", "pytorch", "--int4-awq", "--dry-run"], "int4_awq"),
        (["build", "--model", "qwen3-8b", "--target", "hopper", "--runtime", "pytorch", "--kv-cache-dtype", "int8", "--dry-run"], "int8"),
    ],
)  # fmt: skip
def test_refusals_are_one_line_exit_2(cli: Callable[..., Any], args: list[str], needle: str) -> None:
    message, hint = usage_error(cli(*args))
    assert needle in message + hint
