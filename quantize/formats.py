"""Quantisation formats: facts only (no torch/modelopt import), shared by plan, quantize and build.

Sources: shared/contracts/tensorrt-llm-1.2.json (support by SM and by architecture, quant_algo names),
TensorRT-LLM ``tensorrt_llm/quantization/quantize_by_modelopt.py`` (qformat -> ModelOpt config) and
the roofline formulas of shared/contracts/gpus.json (bytes per weight).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

QFormatName = Literal[
    "full_prec", "fp8", "int4_awq", "w4a8_awq", "int8_sq", "int8_wo", "int4_wo", "nvfp4", "mxfp4"
]
KvDtype = Literal["auto", "fp8", "int8"]
Compute = Literal["bf16", "fp8", "int8"]

AWQ_GROUP_SIZE = 128
# gpt-oss MXFP4: two E2M1 values per byte (*_blocks) plus one E8M0 byte per 32 values (*_scales), i.e.
# 4.25 bits per weight (shared/contracts/swallow-models-2026.md section 2).
MXFP4_BLOCK = 32


@dataclass(frozen=True)
class QFormat:
    name: QFormatName
    title: str
    quant_algo: str | None  # TensorRT-LLM checkpoint quantization.quant_algo
    modelopt_cfg: str | None  # mtq config; None: weights exported unquantised (TRT-LLM quantises weight-only)
    weight_bytes: float  # bytes per quantised GEMM weight, scales included
    compute: Compute  # tensor-core precision of the GEMMs (prefill floor)
    min_sm: int
    sms: tuple[int, ...]  # SMs whose engine-era kernels run it
    gemm_plugin: str  # trtllm-build --gemm_plugin for this format ("dtype" = the model dtype)
    # Only the MoE experts are quantised; attention, router, embedding and lm_head stay in the model
    # dtype (gpt-oss's modules_to_not_convert).
    experts_only: bool = False
    # The format exists only as a checkpoint ships it (no calibration or export here), on the
    # PyTorch runtime (no engine reads it).
    as_shipped: bool = False


FORMATS: dict[str, QFormat] = {
    f.name: f
    for f in (
        QFormat(
            "full_prec",
            "BF16/FP16 (no quantisation)",
            None,
            None,
            2.0,
            "bf16",
            80,
            (80, 86, 89, 90, 100),
            "dtype",
        ),
        QFormat(
            "fp8",
            "FP8 E4M3 weights+activations, per-tensor scales",
            "FP8",
            "FP8_DEFAULT_CFG",
            1.0,
            "fp8",
            89,
            (89, 90, 100),
            "fp8",
        ),
        QFormat(
            "int4_awq",
            "INT4 AWQ weight-only, group 128",
            "W4A16_AWQ",
            "INT4_AWQ_CFG",
            0.5 + 2 / AWQ_GROUP_SIZE,
            "bf16",
            80,
            (80, 86, 89, 90, 100),
            "dtype",
        ),
        QFormat(
            "w4a8_awq",
            "INT4 AWQ weights, FP8 activations",
            "W4A8_AWQ",
            "W4A8_AWQ_BETA_CFG",
            0.5 + 2 / AWQ_GROUP_SIZE,
            "fp8",
            89,
            (89, 90),
            "dtype",
        ),
        QFormat(
            "int8_sq",
            "INT8 SmoothQuant, per-channel",
            "W8A8_SQ_PER_CHANNEL",
            "INT8_SMOOTHQUANT_CFG",
            1.0,
            "int8",
            80,
            (80, 86, 89, 90),
            "dtype",
        ),
        QFormat("int8_wo", "INT8 weight-only", "W8A16", None, 1.0, "bf16", 80, (80, 86, 89, 90), "dtype"),
        QFormat("int4_wo", "INT4 weight-only", "W4A16", None, 0.5, "bf16", 80, (80, 86, 89, 90), "dtype"),
        QFormat(
            "nvfp4",
            "NVFP4 (Blackwell)",
            "NVFP4",
            "NVFP4_DEFAULT_CFG",
            0.5 + 1 / 16,
            "fp8",
            100,
            (100,),
            "nvfp4",
        ),
        QFormat(
            "mxfp4",
            "MXFP4 experts as gpt-oss ships them (W4A16 on Hopper), PyTorch runtime only",
            "W4A16_MXFP4",
            None,
            0.5 + 1 / MXFP4_BLOCK,
            "bf16",
            90,
            (90, 100),
            "dtype",
            experts_only=True,
            as_shipped=True,
        ),
    )
}

# Which formats ModelOpt can export to a TensorRT-LLM checkpoint, per HF architecture (contract file:
# support_by_architecture). full_prec and the weight-only formats need no calibration.
FORMATS_BY_CLASS: dict[str, tuple[str, ...]] = {
    "LlamaForCausalLM": ("full_prec", "fp8", "int4_awq", "w4a8_awq", "int8_sq", "int8_wo", "int4_wo"),
    "MistralForCausalLM": ("full_prec", "fp8", "int4_awq", "int8_wo", "int4_wo"),
    "MixtralForCausalLM": ("full_prec", "fp8", "int8_wo", "nvfp4"),
    "Qwen3ForCausalLM": ("full_prec", "fp8", "int4_awq", "w4a8_awq", "int8_wo", "int4_wo"),
    "Qwen3MoeForCausalLM": ("full_prec", "fp8", "int4_awq", "w4a8_awq", "int8_wo"),
    # No engine model exists for GPT-OSS: nothing is exported to a TensorRT-LLM checkpoint.
    "GptOssForCausalLM": (),
}

# Formats the PyTorch (LLM-API) runtime loads per architecture where the engine path has none
# (TensorRT-LLM docs/source/features/quantization.md: GPT-OSS runs MXFP4 and BF16, FP8 KV only).
PYTORCH_FORMATS_BY_CLASS: dict[str, tuple[str, ...]] = {
    "GptOssForCausalLM": ("full_prec", "mxfp4"),
    # What `build --runtime pytorch` makes with ModelOpt's unified HF export (seen exporting on CPU).
    "Qwen3ForCausalLM": ("full_prec", "fp8", "nvfp4"),
    "Qwen3MoeForCausalLM": ("full_prec", "fp8", "nvfp4"),
}

KV_BY_CLASS: dict[str, tuple[str, ...]] = {
    "LlamaForCausalLM": ("auto", "fp8", "int8"),
    "MistralForCausalLM": ("auto", "fp8", "int8"),
    "MixtralForCausalLM": ("auto", "fp8"),
    "Qwen3ForCausalLM": ("auto", "fp8", "int8"),
    "Qwen3MoeForCausalLM": ("auto", "fp8"),
    "GptOssForCausalLM": ("auto", "fp8"),
}

# KV-cache dtypes the engine-era kernels support per SM (contract: FP8 KV on Ampere is PyTorch-backend only).
KV_BY_SM: dict[int, tuple[str, ...]] = {
    80: ("auto", "int8"),
    86: ("auto", "int8"),
    89: ("auto", "fp8", "int8"),
    90: ("auto", "fp8", "int8"),
    100: ("auto", "fp8"),
}

KV_QUANT_ALGO = {"auto": None, "fp8": "FP8", "int8": "INT8"}
KV_BYTES = {"fp8": 1, "int8": 1}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def kv_bytes_per_element(kv_dtype: str, model_dtype: str) -> int:
    return KV_BYTES.get(kv_dtype) or DTYPE_BYTES[model_dtype]
