"""Architecture facts of a checkpoint and the parameter arithmetic the planner is built on.

A checkpoint's own ``config.json`` is the truth; the registry supplies the same facts for discovery
before anything is downloaded. Both end up as one :class:`ModelArch`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from swallow_trt.errors import ConfigFileError, UsageError

HfClass = Literal["LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM"]
SUPPORTED_CLASSES: tuple[str, ...] = ("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM")


@dataclass(frozen=True)
class RopeScaling:
    rope_type: str
    factor: float
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = None


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

    @property
    def is_moe(self) -> bool:
        return self.num_local_experts > 0

    # --- parameter counts (exact for Llama/Mistral/Mixtral: no biases) -----------------------------
    @property
    def attention_params_per_layer(self) -> int:
        q = self.hidden_size * self.num_attention_heads * self.head_dim
        kv = 2 * self.hidden_size * self.num_key_value_heads * self.head_dim
        o = self.num_attention_heads * self.head_dim * self.hidden_size
        return q + kv + o

    @property
    def mlp_params_per_layer(self) -> int:
        one = 3 * self.hidden_size * self.intermediate_size  # gate, up, down
        if self.is_moe:
            return self.num_local_experts * one
        return one

    @property
    def router_params_per_layer(self) -> int:
        return self.hidden_size * self.num_local_experts if self.is_moe else 0

    @property
    def norm_params_per_layer(self) -> int:
        return 2 * self.hidden_size

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
        """Norms and routers: kept in the model dtype by every format."""
        return (
            self.num_hidden_layers * (self.norm_params_per_layer + self.router_params_per_layer)
            + self.hidden_size
        )

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embedding_params + self.lm_head_params + self.small_params

    @property
    def active_linear_params(self) -> int:
        """GEMM weights touched per token (MoE: only top-k experts)."""
        if not self.is_moe:
            return self.linear_params
        mlp = self.num_experts_per_tok * 3 * self.hidden_size * self.intermediate_size
        return self.num_hidden_layers * (self.attention_params_per_layer + mlp)

    @property
    def active_params(self) -> int:
        return self.active_linear_params + self.embedding_params + self.lm_head_params + self.small_params


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return None


def arch_from_hf_config(cfg: dict[str, Any], source: str) -> ModelArch:
    """Read a Hugging Face ``config.json`` dict. Unsupported architectures are refused here."""
    archs = cfg.get("architectures") or []
    hf_class = archs[0] if archs else None
    if hf_class not in SUPPORTED_CLASSES:
        raise UsageError(
            f"{source}: architecture {hf_class!r} is not supported",
            "swallow-trt builds Llama, Mistral and Mixtral Swallow checkpoints ("
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
            )
    try:
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        return ModelArch(
            hf_class=hf_class,
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_hidden_layers=int(cfg["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            vocab_size=int(cfg["vocab_size"]),
            max_position_embeddings=int(cfg.get("max_position_embeddings") or 2048),
            rope_theta=float(rope_theta),
            rope_scaling=scaling,
            sliding_window=cfg.get("sliding_window"),
            num_local_experts=int(cfg.get("num_local_experts") or 0),
            num_experts_per_tok=int(cfg.get("num_experts_per_tok") or 0)
            if cfg.get("num_local_experts")
            else 0,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            hidden_act=str(cfg.get("hidden_act") or "silu"),
            torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"),
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
