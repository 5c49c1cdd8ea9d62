"""The ``trtllm-build`` argv for an in-flight-batching engine, from a target profile plus overrides.

Every flag emitted is in the pinned TensorRT-LLM 1.2.x parser (data/tensorrt-llm-1.2.json), and every
attention setting and ``max_num_tokens`` carry the value the engine will really have (the effective
settings of builders/engine_rules.py), so trtllm-build has nothing to override. The tests check every
argv the dry-run path can emit against both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swallow_trt.quantize.formats import FORMATS


@dataclass(frozen=True)
class EngineSpec:
    checkpoint_dir: Path
    output_dir: Path
    sm: int
    qformat: str
    kv_cache_dtype: str
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    max_beam_width: int
    tokens_per_block: int
    gpt_attention_plugin: str
    # Effective values (builders/engine_rules.py), not the profile's requests.
    context_fmha: bool
    use_paged_context_fmha: bool
    use_fp8_context_fmha: bool
    multiple_profiles: bool
    fp8_gemm_plugin: str
    workers: int
    timing_cache: Path | None = None

    @property
    def gemm_plugin(self) -> str:
        plugin = FORMATS[self.qformat].gemm_plugin
        if plugin == "fp8":
            return self.fp8_gemm_plugin
        if plugin == "dtype":
            return "auto"  # "auto" = the checkpoint's dtype
        return plugin


def _flag(on: bool) -> str:
    return "enable" if on else "disable"


def trtllm_build_argv(spec: EngineSpec) -> list[str]:
    argv = [
        "trtllm-build",
        "--checkpoint_dir", str(spec.checkpoint_dir),
        "--output_dir", str(spec.output_dir),
        "--max_batch_size", str(spec.max_batch_size),
        "--max_input_len", str(spec.max_input_len),
        "--max_seq_len", str(spec.max_seq_len),
        "--max_num_tokens", str(spec.max_num_tokens),
        "--max_beam_width", str(spec.max_beam_width),
        # In-flight batching: attention plugin, packed (unpadded) inputs and a paged KV cache.
        "--gpt_attention_plugin", spec.gpt_attention_plugin,
        "--remove_input_padding", "enable",
        "--kv_cache_type", "paged",
        "--tokens_per_block", str(spec.tokens_per_block),
        "--context_fmha", _flag(spec.context_fmha),
        # Paged context FMHA is what lets Triton enable chunked context at run time.
        "--use_paged_context_fmha", _flag(spec.use_paged_context_fmha),
        "--use_fp8_context_fmha", _flag(spec.use_fp8_context_fmha),
        "--gemm_plugin", spec.gemm_plugin,
        "--multiple_profiles", _flag(spec.multiple_profiles),
        "--workers", str(spec.workers),
    ]  # fmt: skip
    if spec.timing_cache is not None:
        argv += [
            "--input_timing_cache",
            str(spec.timing_cache),
            "--output_timing_cache",
            str(spec.timing_cache),
        ]
    return argv
