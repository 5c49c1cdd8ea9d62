"""Every argv the dry-run path can emit (model family x target x format x KV dtype x TP) is either a
validation error with a hint, or a trtllm-build command that the pinned TensorRT-LLM 1.2 parser takes
as it is: every flag in its flag set, none of the flags it lacks, no attention setting or
max_num_tokens that its post-parse rules would change, and chunked context only where paged context
FMHA survives. The rules are read from the contract copy (trtllm_build.constraints)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from swallow_trt.builders.plan import Plan, PlanRequest, make_plan
from swallow_trt.errors import UsageError
from swallow_trt.profiles import SHIPPED
from swallow_trt.quantize.formats import FORMATS, KV_QUANT_ALGO

CONTRACT: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "core" / "data" / "tensorrt-llm-1.2.json").read_text()
)
TB = CONTRACT["trtllm_build"]


def pinned_flags() -> set[str]:
    flags = set(TB["io"]) | set(TB["shapes"]) | set(TB["build_behaviour"]) | set(TB["lora_and_speculative"])
    flags |= set(TB["kv_cache"]) - {"deprecated"}
    flags |= set(TB["plugins_dtype_or_disable"]["flags"]) | set(TB["plugins_enable_or_disable"])
    flags |= set(TB["plugins_int"])
    return flags


def constraint(pattern: str) -> re.Match[str]:
    found = [m for c in TB["constraints"] if (m := re.search(pattern, c))]
    assert len(found) == 1, f"the contract states no single rule matching {pattern!r}"
    return found[0]


FLAGS = pinned_flags()
MISSING = set(TB["not_in_the_1_2_parser"])
# The post-parse rules, as the contract words them.
_fp8 = constraint(
    r"--use_fp8_context_fmha takes effect on SM >= (\d+) .* when the weights are ([A-Z0-9_]+(?:, [A-Z0-9_]+)* or [A-Z0-9_]+);"
)
FP8_MIN_SM = int(_fp8.group(1))
FP8_ALGOS = set(re.split(r", | or ", _fp8.group(2)))
constraint(r"FP8 KV cache and FP8 context FMHA off .* silently switches paged context FMHA OFF")
constraint(r"INT8 KV cache it is switched off too")
constraint(r"cannot run chunked context")
constraint(
    r"max_num_tokens below tokens_per_block is raised to it; above max_batch_size \* max_seq_len it is clipped"
)

MODELS = {
    "llama3.1-8b": "8b",
    "llama3.1-70b": "70b",
    "llama2-swallow-13b": "tokyotech-llm/Swallow-13b-hf",
    "swallow-ms": "tokyotech-llm/Swallow-MS-7b-v0.1",
    "swallow-mx": "tokyotech-llm/Swallow-MX-8x7b-NVE-v0.1",
}
KV = (None, "auto", "fp8", "int8")
CASES = list(itertools.product(SHIPPED, FORMATS, MODELS, (1, 2, 4, 8), KV))


def plan_or_refusal(target: str, qformat: str, model: str, tp: int, kv: str | None) -> Plan | UsageError:
    req = PlanRequest(model=MODELS[model], target=target, qformat=qformat, tp=tp, gpus=8, kv_cache_dtype=kv)
    try:
        return make_plan(req)
    except UsageError as exc:
        return exc


def test_contract_lists_no_flag_twice() -> None:
    assert MISSING.isdisjoint(FLAGS), MISSING & FLAGS
    assert {"FP8", "W4A8_AWQ", "NVFP4"} == FP8_ALGOS
    assert FP8_MIN_SM == 89


@pytest.mark.parametrize(("target", "qformat", "model", "tp", "kv"), CASES)
def test_argv_is_taken_as_it_is_or_refused(
    target: str, qformat: str, model: str, tp: int, kv: str | None
) -> None:
    plan = plan_or_refusal(target, qformat, model, tp, kv)
    if isinstance(plan, UsageError):
        assert plan.hint, f"validation error without a hint: {plan.message}"
        assert plan.exit_code == 2
        return
    argv = plan.commands["engine"]
    assert argv[0] == "trtllm-build"
    emitted = {a for a in argv[1:] if a.startswith("--")}
    assert emitted <= FLAGS, emitted - FLAGS
    assert not emitted & MISSING
    assert "--opt_num_tokens" not in emitted or "--multiple_profiles" not in emitted
    value = dict(zip(argv[1::2], argv[2::2], strict=False))
    # In-flight batching prerequisites.
    assert value["--gpt_attention_plugin"] != "disable"
    assert value["--remove_input_padding"] == "enable"
    assert value["--kv_cache_type"] == "paged"

    sm, algo = plan.profile.sm, FORMATS[plan.qformat].quant_algo
    kv_algo = KV_QUANT_ALGO[plan.kv_cache_dtype]
    fmha = value["--context_fmha"] == "enable"
    paged = value["--use_paged_context_fmha"] == "enable"
    fp8 = value["--use_fp8_context_fmha"] == "enable"
    fp8_attention = fmha and algo in FP8_ALGOS and sm >= FP8_MIN_SM
    # Nothing for upstream to flip: FP8 context FMHA only where it takes effect, and on where upstream
    # would switch it on (FP8 KV with paged context FMHA); paged context FMHA only where it survives.
    assert not fp8 or fp8_attention
    if fp8_attention and paged:
        assert fp8 == (kv_algo == "FP8")
    if paged:
        assert fmha
        assert kv_algo != "INT8"
        assert kv_algo != "FP8" or fp8
    # Chunked context exactly where the profile asks for it and paged context FMHA survives.
    assert plan.settings.chunked_context.value == (plan.profile.runtime.enable_chunked_context and paged)
    assert plan.settings.use_paged_context_fmha.value == paged
    assert plan.settings.use_fp8_context_fmha.value == fp8
    # max_num_tokens inside upstream's clamps.
    tokens = int(value["--max_num_tokens"])
    assert (
        int(value["--tokens_per_block"])
        <= tokens
        <= int(value["--max_batch_size"]) * int(value["--max_seq_len"])
    )
    assert tokens == plan.max_num_tokens
    if tokens < int(value["--max_input_len"]):
        assert plan.settings.chunked_context.value

    if plan.profile.sm < 89:
        assert plan.qformat not in ("fp8", "w4a8_awq", "nvfp4")
        assert value["--gemm_plugin"] != "fp8"
        assert plan.kv_cache_dtype != "fp8"
    if plan.model.arch.hf_class == "MixtralForCausalLM":
        assert "awq" not in plan.qformat
    assert int(value["--workers"]) <= 8
    assert (
        int(value["--max_input_len"]) < int(value["--max_seq_len"]) <= plan.model.arch.max_position_embeddings
    )


def test_every_combination_was_exercised() -> None:
    # Guard against a refactor that makes every case a validation error.
    plans = [p for case in CASES if not isinstance(p := plan_or_refusal(*case), UsageError)]
    assert len(plans) > len(CASES) // 4
    # Both outcomes of the chunked-context rule occur (an explicit FP8 or INT8 KV cache loses it).
    assert {p.settings.chunked_context.value for p in plans} == {True, False}
