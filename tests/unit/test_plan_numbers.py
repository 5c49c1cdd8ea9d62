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


# --- the 2026 generation: Qwen3, Qwen3-MoE, GPT-OSS (shared/contracts/swallow-models-2026.md) ---------


def test_qwen3_8b_bf16_kv_is_144_kib(plan_json: PlanJson) -> None:
    p = plan_json(
        "--model", "qwen3-8b", "--qformat", "full_prec", "--target", "hopper", "--gpu", "H100-SXM5-80GB"
    )
    # 2 (K, V) x 36 layers x 8 KV heads x head_dim 128 x 2 bytes: the 144 KiB a third party reports.
    assert p["kv_bytes_per_token"] == 2 * 36 * 8 * 128 * 2 == 147_456 == 144 * 1024
    assert p["kv_window_bytes_per_sequence"] == 0
    assert p["runtime"] == "engine"
    # The card's 32,768-token context caps nothing here (the profile asks 8192), but --max-seq-len past it notes it.
    q = plan_json("--model", "qwen3-8b", "--qformat", "full_prec", "--target", "hopper", "--gpu", "H200-SXM-141GB",
                  "--max-seq-len", "40960", "--max-input-len", "4096")  # fmt: skip
    assert any("32768 tokens the card recommends" in n for n in q["notes"])


def test_qwen3_32b_fp8_hopper(plan_json: PlanJson) -> None:
    p = plan_json("--model", "qwen3-32b", "--fp8", "--target", "hopper", "--gpu", "H100-SXM5-80GB")
    assert p["model"]["resolved"] == "tokyotech-llm/Qwen3-Swallow-32B-RL-v0.2"
    # head_dim 128 is independent of hidden / heads (5120 / 64 = 80): q and o are 5120 x 8192.
    attn = 2 * 5120 * 64 * 128 + 2 * 5120 * 8 * 128
    mlp = 3 * 5120 * 25600
    small = 64 * (2 * 5120 + 2 * 128) + 5120  # input/post norms, q_norm/k_norm of head_dim, final norm
    embed = 151936 * 5120  # untied: the lm_head is as large again
    assert p["model"]["params"] == 64 * (attn + mlp) + 2 * embed + small
    assert abs(p["model"]["params"] - 32.76e9) < 0.01e9
    gpu = p["gpus"][0]
    assert gpu["weight_bytes"] == 64 * (attn + mlp) * 1 + 2 * embed * 2 + small * 2
    assert (p["kv_cache_dtype"], p["kv_bytes_per_token"]) == ("fp8", 2 * 64 * 8 * 128 * 1) == ("fp8", 131_072)
    assert gpu["fits"] is True
    blocks = gpu["kv_budget_bytes"] // (131_072 * 32)
    assert gpu["kv_tokens"] == blocks * 32
    assert gpu["kv_sequences"] == gpu["kv_budget_bytes"] // (8192 * 131_072)
    engine = p["commands"]["engine"]["argv"]
    assert engine[0] == "trtllm-build"


def test_qwen3_30b_a3b_fp8_ada(plan_json: PlanJson) -> None:
    p = plan_json("--model", "qwen3-30b-a3b", "--fp8", "--target", "ada", "--gpu", "L40S")
    attn = 2 * 2048 * 32 * 128 + 2 * 2048 * 4 * 128
    expert = 3 * 2048 * 768  # moe_intermediate_size 768, not the 6144 dense-equivalent
    router = 128 * 2048
    small = 48 * (2 * 2048 + 2 * 128 + router) + 2048
    embed = 151936 * 2048
    assert p["model"]["params"] == 48 * (attn + 128 * expert) + 2 * embed + small
    assert abs(p["model"]["params"] - 30.53e9) < 0.01e9
    assert (p["moe_tp_size"], p["moe_ep_size"]) == (1, 1)
    gpu = p["gpus"][0]
    assert gpu["weight_bytes"] == 48 * (attn + 128 * expert) + 2 * embed * 2 + small * 2
    # Batch 1 reads the top-8 of 128 experts, the lm_head, norms and routers; the embedding is gathered.
    assert gpu["weight_read_bytes_per_step"] == 48 * (attn + 8 * expert) + embed * 2 + small * 2
    assert p["kv_bytes_per_token"] == 2 * 48 * 4 * 128 * 1 == 49_152  # 96 KiB in BF16, as reported
    assert gpu["fits"] is True
    # fp8 Qwen3-MoE cannot be exported for an engine (ModelOpt 0.47): auto plans the PyTorch runtime.
    assert p["runtime"] == "pytorch"


def test_gpt_oss_120b_mxfp4_h100x4(plan_json: PlanJson) -> None:
    p = plan_json("--model", "tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4", "--target", "h100x4")
    assert (p["runtime"], p["qformat"], p["tp"]) == ("pytorch", "mxfp4", 4)
    assert p["commands"] == {}  # no trtllm-build for it
    hidden, layers, experts, vocab = 2880, 36, 128, 201088
    attn = 2 * hidden * 64 * 64 + 2 * hidden * 8 * 64
    expert = 3 * hidden * 2880
    norms = 2 * hidden
    router = experts * (hidden + 1)  # weight and bias
    biases = (64 + 2 * 8) * 64 + hidden + 64 + experts * (2 * 2880 + hidden)  # q/k/v/o, sinks, experts
    small = norms + router + biases
    total = layers * (attn + experts * expert + small) + 2 * vocab * hidden + hidden
    assert p["model"]["params"] == total
    assert abs(total - 116.83e9) < 0.01e9
    # TP 4: attention split 4 ways in BF16; experts split 4 ways at 4.25 bits (E2M1 + an E8M0 scale per
    # 32 values); norms, routers, biases, sinks replicated in BF16; embedding and lm_head split 4 ways.
    attn_rank = (2 * hidden * 64 * 64 // 4 + 2 * hidden * 2 * 64) * 2
    experts_rank = experts * expert // 4 * 4.25 / 8
    embed_rank = vocab // 4 * hidden * 2
    gpu = p["gpus"][0]
    assert gpu["weight_bytes"] == int(
        layers * (attn_rank + experts_rank + small * 2) + 2 * embed_rank + hidden * 2
    )
    assert abs(gpu["weight_bytes"] / 2**30 - 15.3) < 0.05
    # KV (BF16): the 18 full-attention layers grow with the sequence; the 18 sliding ones hold 128 tokens.
    assert p["kv_bytes_per_token"] == 2 * 18 * 8 * 64 * 2 == 36_864
    assert p["kv_bytes_per_token_per_gpu"] == 2 * 18 * 2 * 64 * 2 == 9_216
    assert p["kv_window_bytes_per_sequence"] == 2 * 18 * 8 * 64 * 2 * 128 == 4_718_592
    window_rank = 2 * 18 * 2 * 64 * 2 * 128
    assert gpu["kv_window_bytes_per_sequence"] == window_rank
    assert gpu["kv_sequences"] == gpu["kv_budget_bytes"] // (8192 * 9_216 + window_rank)
    seqs = gpu["kv_sequences"]
    assert gpu["kv_tokens"] == (gpu["kv_budget_bytes"] - seqs * window_rank) // (9_216 * 32) * 32
    # Run as shipped: no quantize stage, only the MXFP4 download.
    assert p["host"]["trtllm_checkpoint_bytes"] == 0
    assert p["host"]["disk_bytes"] == p["host"]["hf_checkpoint_bytes"]


def test_gpt_oss_local_config_layer_types_and_mxfp4(plan_json: PlanJson, tmp_path: Path) -> None:
    layer_types = ["sliding_attention", "full_attention"] * 12
    ckpt = write_hf_config(
        tmp_path / "gpt-oss", architectures=["GptOssForCausalLM"], hidden_size=2880, intermediate_size=2880,
        num_hidden_layers=24, num_attention_heads=64, num_key_value_heads=8, head_dim=64, vocab_size=201088,
        max_position_embeddings=131072, rope_theta=150000.0, sliding_window=128, layer_types=layer_types,
        num_local_experts=32, num_experts_per_tok=4, attention_bias=True,
        rope_scaling={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                      "original_max_position_embeddings": 4096},
        quantization_config={"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]},
    )  # fmt: skip
    p = plan_json("--model", str(ckpt), "--target", "hopper", "--gpu", "H100-SXM5-80GB")
    a = p["model"]["arch"]
    assert (a["sliding_layers"], a["sliding_window"], a["checkpoint_quant"]) == (12, 128, "mxfp4")
    assert (a["attention_sinks"], a["expert_bias"]) == (True, True)
    assert a["rope_scaling"]["beta_fast"] == 32.0
    assert (p["runtime"], p["qformat"]) == ("pytorch", "mxfp4")
    assert p["kv_bytes_per_token"] == 2 * 12 * 8 * 64 * 2
    assert abs(p["model"]["params"] - 20.91e9) < 0.01e9


def test_qwen3_local_config_head_dim_and_no_sliding(plan_json: PlanJson, tmp_path: Path) -> None:
    # Qwen3's configs carry sliding_window with use_sliding_window false: every layer is full.
    ckpt = write_hf_config(
        tmp_path / "q3", architectures=["Qwen3ForCausalLM"], hidden_size=1024, intermediate_size=3072,
        num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        sliding_window=4096, use_sliding_window=False, max_window_layers=28,
    )  # fmt: skip
    p = plan_json("--model", str(ckpt), "--qformat", "full_prec", "--target", "hopper")
    a = p["model"]["arch"]
    assert (a["head_dim"], a["qk_norm"], a["sliding_window"], a["sliding_layers"]) == (128, True, None, 0)
    assert p["kv_bytes_per_token"] == 2 * 4 * 8 * 128 * 2
    attn = 2 * 1024 * 16 * 128 + 2 * 1024 * 8 * 128
    small = 4 * (2 * 1024 + 2 * 128) + 1024
    assert p["model"]["params"] == 4 * (attn + 3 * 1024 * 3072) + 2 * 151936 * 1024 + small
