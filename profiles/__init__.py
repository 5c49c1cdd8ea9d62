"""GPU target profiles: the schema and the shipped YAML files (one per target).

A profile describes a machine (GPU model(s), count, SM), the formats it supports, the engine build
settings for in-flight batching and the Triton runtime settings. Users pass their own with
``--profile FILE``; it goes through the same schema (unknown keys rejected, errors with file:line).
Precedence: CLI flag > profile file > built-in default (the dataclass defaults below).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from swallow_trt.errors import UnknownTargetError
from swallow_trt.quantize.formats import FORMATS, KV_BY_SM, KvDtype, QFormatName
from swallow_trt.schema import load_file

SHIPPED = ("ampere", "ampere-sm86", "ada", "hopper", "h100x4")


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gib: float
    bandwidth_tb_s: float
    bf16_tflops: float
    fp8_tflops: float | None = None
    link: str = ""

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)


@dataclass(frozen=True)
class FormatSettings:
    supported: list[QFormatName]
    default: QFormatName
    kv_cache_dtype: KvDtype  # KV dtype used with quantised formats unless --kv-cache-dtype says otherwise
    # trtllm-build switches paged context FMHA, and so chunked context, off for an FP8 KV cache under
    # weights whose attention is not FP8 (int4_awq, int8_sq, weight-only). True: those formats get the
    # model dtype's KV cache instead (chunked context kept, twice the KV memory per token); False: they
    # keep kv_cache_dtype and run without chunked context. --kv-cache-dtype always wins.
    keep_chunked_context: bool = True

    def __post_init__(self) -> None:
        if self.default not in self.supported:
            raise ValueError(f"default format {self.default!r} is not in supported {self.supported}")


@dataclass(frozen=True)
class BuildSettings:
    """trtllm-build settings. In-flight batching needs the attention plugin, removed input padding and
    a paged KV cache, so those are not optional here."""

    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    max_beam_width: int = 1
    tokens_per_block: int = 32
    gpt_attention_plugin: str = "auto"
    context_fmha: bool = True
    use_paged_context_fmha: bool = True
    use_fp8_context_fmha: bool = False
    multiple_profiles: bool = True
    fp8_gemm_plugin: Literal["fp8", "auto", "disable"] = "fp8"

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens", "max_beam_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.tokens_per_block < 1 or self.tokens_per_block & (self.tokens_per_block - 1):
            raise ValueError("tokens_per_block must be a power of two")
        if self.max_input_len > self.max_seq_len:
            raise ValueError(
                f"max_input_len ({self.max_input_len}) must not exceed max_seq_len ({self.max_seq_len})"
            )
        if self.gpt_attention_plugin == "disable":
            raise ValueError(
                "in-flight batching needs the GPT attention plugin (gpt_attention_plugin != disable)"
            )


@dataclass(frozen=True)
class RuntimeSettings:
    kv_cache_free_gpu_mem_fraction: float = 0.9
    batch_scheduler_policy: Literal["max_utilization", "guaranteed_no_evict"] = "guaranteed_no_evict"
    enable_chunked_context: bool = False
    activation_overhead_gib: float = (
        1.5  # CUDA context, cuBLAS/NCCL workspaces: not available to the KV cache
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.kv_cache_free_gpu_mem_fraction <= 1.0:
            raise ValueError("kv_cache_free_gpu_mem_fraction must be in (0, 1]")
        if self.activation_overhead_gib < 0:
            raise ValueError("activation_overhead_gib must not be negative")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    architecture: str
    sm: int
    gpus: list[GpuSpec]
    gpu_count: int
    interconnect: str
    formats: FormatSettings
    build: BuildSettings
    runtime: RuntimeSettings
    tp: int = 1
    pp: int = 1

    def __post_init__(self) -> None:
        if not self.gpus:
            raise ValueError("gpus must name at least one GPU")
        if self.gpu_count < 1:
            raise ValueError("gpu_count must be at least 1")
        if self.tp * self.pp > self.gpu_count:
            raise ValueError(f"tp x pp ({self.tp} x {self.pp}) exceeds gpu_count ({self.gpu_count})")
        for fmt in self.formats.supported:
            if self.sm not in FORMATS[fmt].sms:
                raise ValueError(f"format {fmt!r} has no engine kernels on sm{self.sm}")
        if self.formats.kv_cache_dtype not in KV_BY_SM.get(self.sm, ("auto",)):
            raise ValueError(
                f"KV-cache dtype {self.formats.kv_cache_dtype!r} is not supported on sm{self.sm}"
            )
        if self.build.use_fp8_context_fmha and self.sm < 89:
            raise ValueError("use_fp8_context_fmha needs Ada or Hopper (sm89 or later)")
        if self.runtime.enable_chunked_context and not self.build.use_paged_context_fmha:
            raise ValueError("enable_chunked_context needs build.use_paged_context_fmha: true")
        if any(g.fp8_tflops is None for g in self.gpus) and "fp8" in self.formats.supported:
            raise ValueError("fp8 is supported but a GPU has no fp8_tflops")

    def gpu(self, name: str | None) -> list[GpuSpec]:
        """The GPUs a plan covers: all of the profile's, or the one named (case-insensitive prefix)."""
        if name is None:
            return list(self.gpus)
        key = name.lower()
        found = [g for g in self.gpus if g.name.lower() == key] or [
            g for g in self.gpus if g.name.lower().startswith(key)
        ]
        if not found:
            names = ", ".join(g.name for g in self.gpus)
            raise UnknownTargetError(
                f"GPU {name!r} is not part of target {self.name!r}", f"choose one of: {names}"
            )
        return found


PROFILE_DIR = Path(__file__).parent


@cache
def load_shipped(name: str) -> Profile:
    from swallow_trt.datacache import cached_load

    path = PROFILE_DIR / f"{name}.yaml"
    from swallow_trt.quantize import formats

    schema = [Path(__file__), Path(formats.__file__)]
    return cached_load(path, schema, lambda: load_file(Profile, path))


def load_profile_file(path: Path) -> Profile:
    return load_file(Profile, path)


def get_target(name: str) -> Profile:
    key = name.strip().lower()
    if key in SHIPPED:
        return load_shipped(key)
    import difflib

    close = difflib.get_close_matches(key, SHIPPED, n=2, cutoff=0.4)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UnknownTargetError(
        f"unknown target {name!r}",
        hint + f"targets: {', '.join(SHIPPED)} (see `swallow-trt targets`), or pass --profile FILE",
    )


def all_targets() -> list[Profile]:
    return [load_shipped(n) for n in SHIPPED]
