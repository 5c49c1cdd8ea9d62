"""Every (profile x format x model family) either gives a trtllm-build argv whose flags are all in the
pinned TensorRT-LLM 1.2.x flag set, or a validation error; FP8 context FMHA only where it is valid."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from swallow_trt.builders.plan import PlanRequest, make_plan
from swallow_trt.errors import UsageError
from swallow_trt.profiles import SHIPPED
from swallow_trt.quantize.formats import FORMATS

CONTRACT: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "core" / "data" / "tensorrt-llm-1.2.json").read_text()
)


def pinned_flags() -> set[str]:
    tb = CONTRACT["trtllm_build"]
    flags = set(tb["io"]) | set(tb["shapes"]) | set(tb["build_behaviour"]) | set(tb["lora_and_speculative"])
    flags |= set(tb["kv_cache"]) - {"deprecated"}
    flags |= set(tb["plugins_dtype_or_disable"]["flags"]) | set(tb["plugins_enable_or_disable"])
    flags |= set(tb["plugins_int"])
    # The unconfirmed flags are deliberately not accepted.
    return flags


FLAGS = pinned_flags()
MODELS = {
    "llama3.1-8b": "8b",
    "llama3.1-70b": "70b",
    "llama2-swallow-13b": "tokyotech-llm/Swallow-13b-hf",
    "swallow-ms": "tokyotech-llm/Swallow-MS-7b-v0.1",
    "swallow-mx": "tokyotech-llm/Swallow-MX-8x7b-NVE-v0.1",
}
CASES = list(itertools.product(SHIPPED, FORMATS, MODELS, (1, 2, 4, 8)))


@pytest.mark.parametrize(("target", "qformat", "model", "tp"), CASES)
def test_argv_in_contract_or_refused(target: str, qformat: str, model: str, tp: int) -> None:
    req = PlanRequest(model=MODELS[model], target=target, qformat=qformat, tp=tp, gpus=8)
    try:
        plan = make_plan(req)
    except UsageError as exc:
        refused: UsageError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.hint, f"validation error without a hint: {refused.message}"
        assert refused.exit_code == 2
        return
    argv = plan.commands["engine"]
    assert argv[0] == "trtllm-build"
    emitted = {a for a in argv[1:] if a.startswith("--")}
    assert emitted <= FLAGS, emitted - FLAGS
    assert "--opt_num_tokens" not in emitted or "--multiple_profiles" not in emitted
    value = dict(zip(argv[1::2], argv[2::2], strict=False))
    # In-flight batching prerequisites.
    assert value["--gpt_attention_plugin"] != "disable"
    assert value["--remove_input_padding"] == "enable"
    assert value["--kv_cache_type"] == "paged"
    fp8_fmha = value["--use_fp8_context_fmha"] == "enable"
    assert fp8_fmha == (plan.profile.sm == 90 and plan.qformat == "fp8" and plan.kv_cache_dtype == "fp8")
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
    ok = 0
    for target, qformat, model, tp in CASES:
        try:
            make_plan(PlanRequest(model=MODELS[model], target=target, qformat=qformat, tp=tp, gpus=8))
            ok += 1
        except UsageError:
            pass
    assert ok > len(CASES) // 4
