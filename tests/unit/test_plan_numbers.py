"""The planner's figures against hand calculation from the models' configs (issue 3 acceptance)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swallow_trt.builders.plan import padded_vocab
from tests.conftest import write_hf_config

PlanJson = Callable[..., dict[str, Any]]


def llama_params(
    layers: int, hidden: int, inter: int, heads: int, kv: int, vocab: int, experts: int = 0
) -> dict[str, int]:
    hd = hidden // heads
    attn = 2 * hidden * heads * hd + 2 * hidden * kv * hd
    mlp = 3 * hidden * inter * max(1, experts)
    small = layers * (2 * hidden + hidden * experts) + hidden
    return {"linear": layers * (attn + mlp), "embed": vocab * hidden, "small": small}


def test_reference_command_70b_fp8_tp4(plan_json: PlanJson) -> None:
    p = plan_json("--model", "70b", "--tp", "4", "--fp8", "--target", "h100x4")
    assert p["model"]["resolved"] == "tokyotech-llm/Llama-3.1-Swallow-70B-Instruct-v0.3"
    assert (p["qformat"], p["kv_cache_dtype"], p["tp"], p["pp"]) == ("fp8", "fp8", 4, 1)
    # 2 x 80 layers x 8 KV heads x 128 x 1 byte
    assert p["kv_bytes_per_token"] == 2 * 80 * 8 * 128 * 1 == 163_840
    assert p["kv_bytes_per_token_per_gpu"] == 163_840 // 4
    n = llama_params(80, 8192, 28672, 64, 8, 128256)
    total = n["linear"] + 2 * n["embed"] + n["small"]
    assert p["model"]["params"] == total
    assert abs(total - 70.6e9) < 0.1e9
    # FP8 GEMMs at 1 byte split 4 ways; embedding and lm_head stay BF16, split 4 ways; norms BF16, replicated.
    expected = n["linear"] // 4 + 2 * (128256 // 4 * 8192 * 2) + n["small"] * 2
    gpu = p["gpus"][0]
    assert gpu["weight_bytes"] == expected
    # "about a quarter of 70.6 G params at 1 byte plus the BF16 lm_head share"
    assert gpu["weight_bytes"] == pytest.approx(70.6e9 / 4 + 128256 * 8192 * 2 / 4, rel=0.04)
    assert gpu["fits"] is True
    # KV budget: (80 GiB - weights - activations - overhead) x 0.9, and tokens are whole 32-token blocks.
    free = 80 * 2**30 - gpu["weight_bytes"] - gpu["activation_bytes"] - gpu["overhead_bytes"]
    assert gpu["kv_budget_bytes"] == int(free * 0.9)
    blocks = gpu["kv_budget_bytes"] // (40_960 * 32)
    assert gpu["kv_tokens"] == blocks * 32
    assert gpu["kv_sequences"] == blocks // (8192 // 32)
    assert gpu["concurrent_sequences"] == min(gpu["kv_sequences"], 256)


def test_llama2_swallow_mha_vocab_43176(plan_json: PlanJson) -> None:
    p = plan_json("--model", "tokyotech-llm/Swallow-7b-hf", "--qformat", "full_prec", "--target", "ampere",
                  "--gpu", "A100-SXM4-80GB")  # fmt: skip
    arch = p["model"]["arch"]
    assert (arch["vocab_size"], arch["num_key_value_heads"], arch["num_attention_heads"]) == (43176, 32, 32)
    assert p["kv_cache_dtype"] == "auto"
    assert p["kv_bytes_per_token"] == 2 * 32 * 32 * 128 * 2 == 524_288
    n = llama_params(32, 4096, 11008, 32, 32, 43176)
    assert p["gpus"][0]["weight_bytes"] == (n["linear"] + 2 * n["embed"] + n["small"]) * 2
    # max_seq_len capped at the model's 4096 positions (the profile says 8192), input at half of it.
    assert (p["max_seq_len"], p["max_input_len"]) == (4096, 2048)
    assert any("capped" in note for note in p["notes"])


def test_awq_pads_vocab_to_64() -> None:
    assert padded_vocab(43176, 1, "int4_awq") == 43200
    assert padded_vocab(43176, 2, "fp8") == 43176
    assert padded_vocab(42800, 4, "int4_awq") == 42816
    assert padded_vocab(32000, 8, "w4a8_awq") == 32000


def test_swallow_ms_mistral(plan_json: PlanJson) -> None:
    p = plan_json("--model", "tokyotech-llm/Swallow-MS-7b-v0.1", "--fp8", "--target", "ada", "--gpu", "L40S")
    assert p["model"]["arch"]["vocab_size"] == 42800
    assert p["model"]["arch"]["sliding_window"] == 4096
    assert p["kv_bytes_per_token"] == 2 * 32 * 8 * 128 * 1 == 65_536
    n = llama_params(32, 4096, 14336, 32, 8, 42800)
    assert p["gpus"][0]["weight_bytes"] == n["linear"] + 2 * n["embed"] * 2 + n["small"] * 2
    assert p["max_seq_len"] <= 4096


def test_swallow_mx_mixtral_tp2(plan_json: PlanJson) -> None:
    p = plan_json("--model", "tokyotech-llm/Swallow-MX-8x7b-NVE-v0.1", "--fp8", "--tp", "2", "--gpus", "2",
                  "--target", "hopper", "--gpu", "H100-SXM5-80GB")  # fmt: skip
    n = llama_params(32, 4096, 14336, 32, 8, 32000, experts=8)
    total = n["linear"] + 2 * n["embed"] + n["small"]
    assert p["model"]["params"] == total
    assert abs(total - 46.7e9) < 0.1e9
    assert (p["moe_tp_size"], p["moe_ep_size"]) == (2, 1)
    assert p["kv_bytes_per_token"] == 2 * 32 * 8 * 128
    assert p["gpus"][0]["weight_bytes"] == n["linear"] // 2 + 2 * (32000 // 2 * 4096 * 2) + n["small"] * 2
    # At batch 1 only the top-2 of 8 experts are read: far fewer bytes than are resident.
    assert p["gpus"][0]["weight_read_bytes_per_step"] < 0.4 * p["gpus"][0]["weight_bytes"]


def test_expert_parallel_split(plan_json: PlanJson) -> None:
    p = plan_json("--model", "tokyotech-llm/Swallow-MX-8x7b-NVE-v0.1", "--fp8", "--tp", "4", "--gpus", "4",
                  "--moe-ep-size", "4", "--target", "hopper", "--gpu", "H100-SXM5-80GB")  # fmt: skip
    assert (p["moe_tp_size"], p["moe_ep_size"]) == (1, 4)


@pytest.mark.parametrize(
    ("args", "low_ms", "high_ms", "published_ms"),
    [
        # Llama-3.1-70B BF16 TP4 on H100: ~10 ms floor; NVIDIA published 21 ms ITL through Triton at 2 QPS.
        (["--model", "70b", "--tp", "4", "--qformat", "full_prec", "--target", "h100x4"], 9.5, 11.5, 21.0),
        # Llama-3.1-8B BF16 TP1 on H100: ~4.5 ms floor; published 8 ms.
        (
            ["--model", "8b", "--qformat", "full_prec", "--target", "hopper", "--gpu", "H100-SXM5-80GB"],
            4.2,
            5.0,
            8.0,
        ),
    ],
)
def test_floors_below_published_measurements(
    plan_json: PlanJson, args: list[str], low_ms: float, high_ms: float, published_ms: float
) -> None:
    gpu = plan_json(*args)["gpus"][0]
    floor_ms = gpu["decode_step_floor_s"] * 1e3
    assert low_ms < floor_ms < high_ms
    assert floor_ms < published_ms


def test_decode_floor_is_bytes_over_bandwidth(plan_json: PlanJson) -> None:
    p = plan_json("--model", "8b", "--qformat", "full_prec", "--target", "hopper", "--gpu", "H100-SXM5-80GB",
                  "--max-input-len", "1000", "--max-seq-len", "2000")  # fmt: skip
    n = llama_params(32, 4096, 14336, 32, 8, 128256)
    read = (n["linear"] + n["embed"] + n["small"]) * 2  # lm_head streamed, embedding gathered
    kv = 1000 * 2 * 32 * 8 * 128 * 2
    gpu = p["gpus"][0]
    assert gpu["weight_read_bytes_per_step"] == read
    assert gpu["decode_step_floor_s"] == pytest.approx((read + kv) / 3.35e12)
    # prefill: (2 x GEMM params x L + 2 x lm_head + 2 x layers x L^2 x hidden) / peak BF16
    flops = 2 * n["linear"] * 1000 + 2 * n["embed"] + 2 * 32 * 1000**2 * 4096
    assert gpu["prefill_floor_s"] == pytest.approx(flops / 989e12)
    assert gpu["tokens_per_s_ceiling"] > gpu["tokens_per_s_single_stream_ceiling"]


def test_local_checkpoint_config_is_the_truth(plan_json: PlanJson, tmp_path: Path) -> None:
    ckpt = write_hf_config(
        tmp_path / "my-model", vocab_size=50000, _name_or_path="tokyotech-llm/Swallow-7b-instruct-hf"
    )
    p = plan_json("--model", str(ckpt), "--qformat", "full_prec", "--target", "hopper")
    assert p["model"]["source"] == "local"
    assert p["model"]["arch"]["vocab_size"] == 50000  # the registry says 43176; the checkpoint wins
    assert p["model"]["registered"] == "tokyotech-llm/Swallow-7b-instruct-hf"
    assert p["model"]["chat_format"] == "alpaca-ja"
    unknown = write_hf_config(tmp_path / "other")
    q = plan_json("--model", str(unknown), "--qformat", "full_prec", "--target", "hopper")
    assert q["model"]["registered"] is None
    assert q["model"]["chat_format"] is None


def test_transformers5_rope_parameters_are_read(tmp_path: Path, plan_json: PlanJson) -> None:
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}  # fmt: skip
    ckpt = write_hf_config(tmp_path / "l31", rope_parameters=rope, rope_theta=None, vocab_size=128256,
                           max_position_embeddings=131072)  # fmt: skip
    arch = plan_json("--model", str(ckpt), "--qformat", "full_prec", "--target", "hopper")["model"]["arch"]
    assert arch["rope_theta"] == 500000.0
    assert arch["rope_scaling"]["rope_type"] == "llama3"
    assert arch["rope_scaling"]["factor"] == 8.0


def test_kv_heads_replicated_when_tp_exceeds_them(plan_json: PlanJson) -> None:
    p = plan_json(
        "--model", "70b", "--tp", "8", "--gpus", "8", "--fp8", "--target", "hopper", "--gpu", "H100-SXM5-80GB"
    )
    # 8 KV heads over TP 8: one per rank; the per-GPU KV is an eighth of the model's.
    assert p["kv_bytes_per_token_per_gpu"] * 8 == p["kv_bytes_per_token"]


def test_pipeline_parallel_splits_layers(plan_json: PlanJson) -> None:
    one = plan_json(
        "--model", "70b", "--tp", "2", "--gpus", "4", "--fp8", "--target", "hopper", "--gpu", "H100-SXM5-80GB"
    )
    two = plan_json("--model", "70b", "--tp", "2", "--pp", "2", "--gpus", "4", "--fp8", "--target", "hopper",
                    "--gpu", "H100-SXM5-80GB")  # fmt: skip
    assert two["kv_bytes_per_token_per_gpu"] * 2 == one["kv_bytes_per_token_per_gpu"]
    assert two["gpus"][0]["weight_bytes"] < 0.55 * one["gpus"][0]["weight_bytes"]
    # Latency floor: a token crosses both stages.
    assert two["gpus"][0]["decode_step_floor_s"] == pytest.approx(
        one["gpus"][0]["decode_step_floor_s"], rel=0.05
    )


def test_commands_are_exact(plan_json: PlanJson) -> None:
    p = plan_json("--model", "70b", "--tp", "4", "--fp8", "--target", "h100x4", "--out", "/data/out")
    q = p["commands"]["quantize"]["argv"]
    assert q[:4] == [
        "swallow-trt",
        "quantize",
        "--model",
        "tokyotech-llm/Llama-3.1-Swallow-70B-Instruct-v0.3",
    ]
    assert q[q.index("--qformat") + 1] == "fp8"
    assert q[q.index("--tp") + 1] == "4"
    engine = p["commands"]["engine"]["argv"]
    assert engine[0] == "trtllm-build"
    assert engine[engine.index("--checkpoint_dir") + 1] == q[q.index("--out") + 1]
    assert engine[engine.index("--workers") + 1] == "4"
    assert engine[engine.index("--use_fp8_context_fmha") + 1] == "enable"
    assert p["commands"]["package"]["argv"][3] == engine[engine.index("--output_dir") + 1]
