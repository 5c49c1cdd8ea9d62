"""Every shipped profile is a test case; GPU figures match the shipped gpus.json contract copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swallow_trt.hw import gpu_facts
from swallow_trt.profiles import SHIPPED, Profile, load_profile_file, load_shipped
from swallow_trt.quantize.formats import FORMATS

SHARED = Path(__file__).resolve().parents[3] / "shared" / "contracts"


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_is_valid_and_matches_gpu_facts(name: str) -> None:
    p = load_shipped(name)
    assert p.name == name
    facts = {g["name"]: g for g in gpu_facts()["gpus"]}
    for gpu in p.gpus:
        ref = facts[gpu.name]
        assert ref["sm"] == p.sm
        assert (gpu.memory_gib, gpu.bandwidth_tb_s, gpu.bf16_tflops, gpu.fp8_tflops) == (
            ref["memory_gib"], ref["bandwidth_tb_s"], ref["bf16_tflops"], ref["fp8_tflops"],
        )  # fmt: skip
    assert p.formats.default in p.formats.supported
    for fmt in p.formats.supported:
        assert p.sm in FORMATS[fmt].sms
    if p.sm < 89:
        assert not {"fp8", "w4a8_awq", "nvfp4"} & set(p.formats.supported)
        assert p.formats.kv_cache_dtype != "fp8"
    # trtllm-build runs FP8 context FMHA on sm89 and later (and switches it on itself there for FP8
    # weights with an FP8 KV cache), and never below.
    assert p.build.use_fp8_context_fmha == (p.sm >= 89)
    # Quantised formats whose attention is not FP8 keep chunked context by default (model-dtype KV).
    assert p.formats.keep_chunked_context
    # In-flight batching with chunked context: paged context FMHA must be on.
    assert p.build.use_paged_context_fmha
    assert p.runtime.enable_chunked_context
    assert 0 < p.runtime.kv_cache_free_gpu_mem_fraction <= 1
    assert p.build.max_input_len < p.build.max_seq_len


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_round_trips_as_user_file(name: str, tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "profiles" / f"{name}.yaml"
    copy = tmp_path / "mine.yaml"
    copy.write_text(src.read_text())
    assert load_profile_file(copy) == load_shipped(name)


def test_h100x4_is_the_reference_target() -> None:
    p: Profile = load_shipped("h100x4")
    assert (p.sm, p.gpu_count, p.tp) == (90, 4, 4)
    assert p.formats.default == "fp8"
    assert p.formats.kv_cache_dtype == "fp8"


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/contracts not present beside this checkout")
@pytest.mark.parametrize("name", ["gpus.json", "tensorrt-llm-1.2.json"])
def test_shipped_contract_copies_are_current(name: str) -> None:
    shipped = Path(__file__).resolve().parents[2] / "core" / "data" / name
    assert json.loads(shipped.read_text()) == json.loads((SHARED / name).read_text())
