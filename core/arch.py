"""Architecture facts of a checkpoint and the parameter arithmetic the planner is built on.

A checkpoint's own ``config.json`` is the truth; the registry supplies the same facts for discovery
before anything is downloaded. Both end up as one :class:`ModelArch`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from swallow_trt.errors import ConfigFileError, UsageError

HfClass = Literal[
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "MixtralForCausalLM",
    "Qwen3ForCausalLM",
    "Qwen3MoeForCausalLM",
    "GptOssForCausalLM",
]
SUPPORTED_CLASSES: tuple[str, ...] = get_args(HfClass)
# GPT-OSS has no TensorRT engine model (no GptOss entry in TensorRT-LLM's engine MODEL_MAP): it runs on
# the PyTorch (LLM-API) runtime only. Everything else has an engine model and runs on both.
PYTORCH_ONLY_CLASSES: tuple[str, ...] = ("GptOssForCausalLM",)
# swallow-trt's PyTorch-runtime path covers the 2026 generation; the older families are engine-only here.
PYTORCH_CLASSES: tuple[str, ...] = ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "GptOssForCausalLM")


def runtimes_for_class(hf_class: str) -> list[str]:
    """The runtimes of an architecture when the registry does not know the checkpoint."""
    if hf_class in PYTORCH_ONLY_CLASSES:
        return ["pytorch"]
    return ["engine", "pytorch"] if hf_class in PYTORCH_CLASSES else ["engine"]


@dataclass(frozen=True)
class RopeScaling:
    rope_type: str
    factor: float
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = None
    beta_fast: float | None = None  # yarn (GPT-OSS)
    beta_slow: float | None = None


@dataclass(frozen=True)
class ModelArch:
    hf_class: HfClass
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    rope_scaling: RopeScaling | None = None
    sliding_window: int | None = None
    num_local_experts: int = 0
    num_experts_per_tok: int = 0
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    torch_dtype: str = "bfloat16"
    # Qwen3-MoE: each expert's width (HF moe_intermediate_size); 0 means intermediate_size is the
    # expert width (Mixtral, GPT-OSS).
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = False  # MoE: top-k router weights renormalised to sum to 1 (Qwen3-MoE)
    qk_norm: bool = False  # Qwen3: RMSNorm of head_dim on q and k in every layer
    attention_bias: bool = False  # GPT-OSS: q/k/v/o projections carry biases
    attention_sinks: bool = False  # GPT-OSS: one learned sink logit per attention head and layer
    expert_bias: bool = False  # GPT-OSS: router and expert projections carry biases
    # Layers whose KV cache holds at most sliding_window tokens (GPT-OSS: the "sliding_attention"
    # entries of layer_types). 0 keeps every layer full, as the engine path treats Mistral's window.
    sliding_layers: int = 0
    # quantization_config of a checkpoint that ships quantised (mxfp4, awq, gptq, ...); None for BF16.
    checkpoint_quant: str | None = None
    checkpoint_desc_act: bool = False

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "vocab_size",
            "max_position_embeddings",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.is_moe and not 0 < self.num_experts_per_tok <= self.num_local_experts:
            raise ValueError("num_experts_per_tok must be between 1 and num_local_experts")
        if not 0 <= self.sliding_layers <= self.num_hidden_layers:
            raise ValueError("sliding_layers must be between 0 and num_hidden_layers")
        if self.sliding_layers and not self.sliding_window:
            raise ValueError("sliding layers need a sliding_window")

    @property
    def is_moe(self) -> bool:
        return self.num_local_experts > 0

    @property
    def expert_intermediate_size(self) -> int:
        """Width of one MLP (dense) or one expert (MoE)."""
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def full_attention_layers(self) -> int:
        return self.num_hidden_layers - self.sliding_layers

    # --- parameter counts (exact for Llama/Mistral/Mixtral/Qwen3/GPT-OSS) ----------------------------
    @property
    def attention_params_per_layer(self) -> int:
        """The q/k/v/o GEMM weights (biases, sinks and norms are in small_params_per_layer)."""
        q = self.hidden_size * self.num_attention_heads * self.head_dim
        kv = 2 * self.hidden_size * self.num_key_value_heads * self.head_dim
        o = self.num_attention_heads * self.head_dim * self.hidden_size
        return q + kv + o

    @property
    def mlp_params_per_layer(self) -> int:
        one = 3 * self.hidden_size * self.expert_intermediate_size  # gate, up, down
        if self.is_moe:
            return self.num_local_experts * one
        return one

    @property
    def router_params_per_layer(self) -> int:
        if not self.is_moe:
            return 0
        return (self.hidden_size + (1 if self.expert_bias else 0)) * self.num_local_experts

    @property
    def norm_params_per_layer(self) -> int:
        return 2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)

    @property
    def bias_params_per_layer(self) -> int:
        """Attention biases (q, k, v, o), sinks and expert biases (gate_up 2 x width, down hidden)."""
        n = 0
        if self.attention_bias:
            n += (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim + self.hidden_size
        if self.attention_sinks:
            n += self.num_attention_heads
        if self.expert_bias:
            experts = max(1, self.num_local_experts)
            n += experts * (2 * self.expert_intermediate_size + self.hidden_size)
        return n

    @property
    def small_params_per_layer(self) -> int:
        """Kept in the model dtype by every format: norms, routers, biases, sinks."""
        return self.norm_params_per_layer + self.router_params_per_layer + self.bias_params_per_layer

    @property
    def linear_params(self) -> int:
        """Weights of every quantisable GEMM (attention + MLP/experts) over all layers."""
        return self.num_hidden_layers * (self.attention_params_per_layer + self.mlp_params_per_layer)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def small_params(self) -> int:
        """Norms, routers, biases and sinks over all layers, plus the final norm."""
        return self.num_hidden_layers * self.small_params_per_layer + self.hidden_size

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embedding_params + self.lm_head_params + self.small_params

    @property
    def active_linear_params(self) -> int:
        """GEMM weights touched per token (MoE: only top-k experts)."""
        if not self.is_moe:
            return self.linear_params
        mlp = self.num_experts_per_tok * 3 * self.hidden_size * self.expert_intermediate_size
        return self.num_hidden_layers * (self.attention_params_per_layer + mlp)

    @property
    def active_params(self) -> int:
        return self.active_linear_params + self.embedding_params + self.lm_head_params + self.small_params


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return None


def _quant_config(cfg: dict[str, Any]) -> tuple[str | None, bool]:
    q = cfg.get("quantization_config")
    if not isinstance(q, dict):
        return None, False
    method = q.get("quant_method")
    return (str(method).lower() if method else None), bool(q.get("desc_act", False))


def _moe_fields(cfg: dict[str, Any], hf_class: str, source: str) -> dict[str, Any]:
    # Mixtral and GPT-OSS say num_local_experts, Qwen3-MoE num_experts.
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 0)
    if not experts:
        return {}
    if hf_class == "Qwen3MoeForCausalLM":
        step = int(cfg.get("decoder_sparse_step") or 1)
        if step != 1 or cfg.get("mlp_only_layers"):
            raise UsageError(
                f"{source}: Qwen3-MoE with dense layers (decoder_sparse_step {step}, mlp_only_layers "
                f"{cfg.get('mlp_only_layers')}) is not supported",
                "the Swallow Qwen3-MoE releases are MoE in every layer (decoder_sparse_step 1, mlp_only_layers [])",
            )
    return {
        "num_local_experts": experts,
        "num_experts_per_tok": int(cfg.get("num_experts_per_tok") or cfg.get("experts_per_token") or 0),
        "moe_intermediate_size": int(cfg.get("moe_intermediate_size") or 0),
        "norm_topk_prob": bool(cfg.get("norm_topk_prob", False)),
    }


def arch_from_hf_config(cfg: dict[str, Any], source: str) -> ModelArch:
    """Read a Hugging Face ``config.json`` dict. Unsupported architectures are refused here."""
    archs = cfg.get("architectures") or []
    hf_class = archs[0] if archs else None
    if hf_class not in SUPPORTED_CLASSES:
        raise UsageError(
            f"{source}: architecture {hf_class!r} is not supported",
            "swallow-trt builds Llama, Mistral, Mixtral, Qwen3, Qwen3-MoE and GPT-OSS Swallow checkpoints ("
            + ", ".join(SUPPORTED_CLASSES)
            + ")",
        )
    # transformers 5.x moves rope settings under rope_parameters; 4.x keeps rope_theta/rope_scaling.
    rope_params = cfg.get("rope_parameters") or {}
    rope_theta = _first(cfg, "rope_theta") or rope_params.get("rope_theta") or 10000.0
    scaling_raw = cfg.get("rope_scaling")
    if scaling_raw is None and rope_params.get("rope_type") not in (None, "default"):
        scaling_raw = rope_params
    scaling: RopeScaling | None = None
    if isinstance(scaling_raw, dict):
        rope_type = scaling_raw.get("rope_type") or scaling_raw.get("type")
        if rope_type and rope_type != "default":
            scaling = RopeScaling(
                rope_type=str(rope_type),
                factor=float(scaling_raw.get("factor", 1.0)),
                low_freq_factor=scaling_raw.get("low_freq_factor"),
                high_freq_factor=scaling_raw.get("high_freq_factor"),
                original_max_position_embeddings=scaling_raw.get("original_max_position_embeddings"),
                beta_fast=scaling_raw.get("beta_fast"),
                beta_slow=scaling_raw.get("beta_slow"),
            )
    # Qwen3's configs carry a sliding_window that use_sliding_window: false switches off.
    window = None if cfg.get("use_sliding_window") is False else cfg.get("sliding_window")
    layer_types = cfg.get("layer_types") or []
    sliding = sum(1 for t in layer_types if t == "sliding_attention") if window else 0
    is_qwen3 = hf_class in ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM")
    is_gpt_oss = hf_class == "GptOssForCausalLM"
    quant_method, desc_act = _quant_config(cfg)
    try:
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        if layer_types and len(layer_types) != int(cfg["num_hidden_layers"]):
            raise ValueError(
                f"layer_types has {len(layer_types)} entries for {cfg['num_hidden_layers']} layers"
            )
        return ModelArch(
            hf_class=hf_class,
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_hidden_layers=int(cfg["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
            # Qwen3 and GPT-OSS set head_dim independently of hidden_size / heads.
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            vocab_size=int(cfg["vocab_size"]),
            max_position_embeddings=int(cfg.get("max_position_embeddings") or 2048),
            rope_theta=float(rope_theta),
            rope_scaling=scaling,
            sliding_window=window,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            hidden_act=str(cfg.get("hidden_act") or "silu"),
            torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"),
            qk_norm=is_qwen3,
            attention_bias=bool(cfg.get("attention_bias", False)),
            attention_sinks=is_gpt_oss,
            expert_bias=is_gpt_oss,
            sliding_layers=sliding,
            checkpoint_quant=quant_method,
            checkpoint_desc_act=desc_act,
            **_moe_fields(cfg, hf_class, source),
        )
    except KeyError as exc:
        raise ConfigFileError(
            f"{source}: missing {exc.args[0]!r}", "the checkpoint's config.json is incomplete"
        ) from None
    except (TypeError, ValueError) as exc:
        raise ConfigFileError(f"{source}: {exc}", "the checkpoint's config.json is inconsistent") from None


def read_hf_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise UsageError(
            f"{directory} has no config.json",
            "pass a Hugging Face checkpoint directory, a registry id or an alias (see `swallow-trt models`)",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigFileError(
            f"{path}: not valid JSON ({exc})", "re-download the checkpoint's config.json"
        ) from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a JSON object", "re-download the checkpoint's config.json")
    return data
