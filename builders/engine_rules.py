"""What ``trtllm-build`` does to its arguments after parsing them, modelled in one place.

TensorRT-LLM 1.2's ``trtllm-build`` does not build what its argv says: after parsing, ``build()``
rewrites the attention settings from the checkpoint's quantisation and the GPU's SM, and
``check_max_num_tokens`` moves ``max_num_tokens`` into range, each with a log line that is easy to miss.
An engine that silently lost paged context FMHA cannot run chunked context (the C++ runtime refuses
``enable_chunked_context`` on it), so the plan must know beforehand. This module answers, for one SM,
weight format, KV dtype and requested settings: what the engine will have, and why. The argv then
carries exactly those values, so upstream has nothing left to flip.

Upstream code read (NVIDIA/TensorRT-LLM, through the project's source search):
- ``tensorrt_llm/builder.py``, ``build()``: the block "Logics to control paged_context_fmha and
  fp8_context_fmha" and the INT8-KV rule after it; ``_init_max_seq_len`` (the version with the
  pydantic ``PluginConfig``; the search tool did not report its commit);
- ``tensorrt_llm/_common.py`` ``check_max_num_tokens`` @73c0d691ea936a348448e00b0a1fe1c428da1ab7;
- ``tensorrt_llm/plugin/plugin.py`` ``PluginConfig`` @c20322ffd3dc0740ca530c9fad989b22e64f6e06
  (paged and FP8 context FMHA default to enable, tokens_per_block to 32);
- ``tensorrt_llm/commands/build.py`` @65f1d1536e18aea3380e6e270e00895a709333eb (the parser).
The same rules are in the contract copy ``data/tensorrt-llm-1.2.json`` (trtllm_build.constraints).

Pure: no heavy imports (``plan`` loads this module).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import swallow_trt
from swallow_trt.quantize.formats import FORMATS, KV_QUANT_ALGO

# Weight quant_algo values whose context attention can run in FP8 (upstream's own list).
FP8_ATTENTION_ALGOS = ("FP8", "W4A8_AWQ", "NVFP4")
FP8_ATTENTION_MIN_SM = 89
# Above this upstream warns (no gain, and the TensorRT tensor volume may overflow).
MAX_NUM_TOKENS_ADVISED = 16384
# The Dockerfile's default image; its TensorRT version keys the timing cache in a plan.
PINNED_IMAGE_TAG = "25.12-trtllm-python-py3"
CONTRACT = Path(swallow_trt.__file__).parent / "data" / "tensorrt-llm-1.2.json"


@dataclass(frozen=True)
class Decision:
    value: Any
    reason: str
    # The flag that would change the decision, when one would (the plan's error names it as a hint).
    remedy: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "reason": self.reason}


@dataclass(frozen=True)
class AttentionRequest:
    """What the profile asks trtllm-build for."""

    context_fmha: bool
    use_paged_context_fmha: bool
    use_fp8_context_fmha: bool


@dataclass(frozen=True)
class UpstreamAttention:
    """What upstream's build() makes of a request, with its log line for every setting it changed."""

    context_fmha: bool
    use_paged_context_fmha: bool
    use_fp8_context_fmha: bool
    changes: dict[str, str]


def upstream_attention(sm: int, quant_algo: str | None, kv_quant_algo: str | None,
                       req: AttentionRequest) -> UpstreamAttention:  # fmt: skip
    """upstream ``build()``'s attention rules, branch for branch, on the requested values."""
    fmha, paged, fp8 = req.context_fmha, req.use_paged_context_fmha, req.use_fp8_context_fmha
    fp8_kv, int8_kv = kv_quant_algo == "FP8", kv_quant_algo == "INT8"
    changes: dict[str, str] = {}

    def paged_off_for_fp8_kv() -> None:
        nonlocal paged
        if paged and fp8_kv:
            paged = False
            changes["use_paged_context_fmha"] = (
                "FP8 Paged Context FMHA is disabled because FP8 context FMHA is disabled"
            )

    if not fmha:
        if fp8 or paged:
            changes["use_fp8_context_fmha"] = changes["use_paged_context_fmha"] = (
                "Context FMHA is disabled, FP8 Context FMHA and Paged Context FMHA are disabled"
            )
        fp8 = paged = False
    elif quant_algo not in FP8_ATTENTION_ALGOS:
        if fp8:
            fp8 = False
            changes["use_fp8_context_fmha"] = (
                "FP8 Context FMHA is disabled because it must be used together with the fp8 quantization workflow"
            )
        paged_off_for_fp8_kv()
    elif sm < FP8_ATTENTION_MIN_SM:
        if fp8:
            fp8 = False
            changes["use_fp8_context_fmha"] = (
                "FP8 context FMHA is disabled because it is only supported on Ada and Hopper Arch"
            )
        paged_off_for_fp8_kv()
    elif paged:
        if not fp8_kv and fp8:
            fp8 = False
            changes["use_fp8_context_fmha"] = (
                "FP8 Paged Context FMHA is disabled because it must be used together with fp8 KV Cache"
            )
        elif fp8_kv and not fp8:
            fp8 = True
            changes["use_fp8_context_fmha"] = "FP8 Context FMHA is enabled to support FP8 Paged Context FMHA"
    if paged and int8_kv:
        paged = False
        changes["use_paged_context_fmha"] = (
            "Paged Context FMHA is disabled because it doesn't work with int8 kv cache currently"
        )
    return UpstreamAttention(fmha, paged, fp8, changes)


def upstream_max_num_tokens(max_num_tokens: int, *, max_batch_size: int, max_seq_len: int, max_input_len: int,
                            tokens_per_block: int, context_fmha: bool) -> tuple[int, str | None]:  # fmt: skip
    """upstream ``check_max_num_tokens`` with padding removed (always, for in-flight batching):
    the value it builds with and its log line when it moved it."""
    value, why = max_num_tokens, None
    ceiling = max_batch_size * max_seq_len
    if value > ceiling:
        value, why = ceiling, f"clipped to max_batch_size x max_seq_len = {ceiling}"
    if value < max_input_len and not context_fmha:
        value, why = max_input_len, f"raised to max_input_len {max_input_len} (context FMHA is off)"
    elif value < tokens_per_block and context_fmha:
        value, why = tokens_per_block, f"raised to tokens_per_block {tokens_per_block}"
    return value, why


def kv_keeps_paged_context(sm: int, qformat: str, kv: str, req: AttentionRequest) -> bool:
    return upstream_attention(sm, FORMATS[qformat].quant_algo, KV_QUANT_ALGO[kv], req).use_paged_context_fmha


def kv_cache_text(kv: str, dtype: str) -> str:
    """'an FP8 KV cache', 'a bfloat16 (auto) KV cache'."""
    return f"a {dtype} (auto) KV cache" if kv == "auto" else f"an {kv.upper()} KV cache"


def choose_kv_cache_dtype(*, sm: int, qformat: str, dtype: str, requested: str | None, profile_kv: str,
                          allowed: tuple[str, ...], keep_chunked_context: bool, chunked_context: bool,
                          req: AttentionRequest) -> Decision:  # fmt: skip
    """The KV dtype of the engine: the user's, else the target's unless it would cost chunked context."""
    if requested is not None:
        return Decision(requested, "--kv-cache-dtype given")
    if qformat == "full_prec":
        return Decision("auto", f"unquantised weights keep a {dtype} KV cache")
    if profile_kv not in allowed:
        return Decision(
            "auto", f"the target's {profile_kv} KV cache cannot be exported for this architecture"
        )
    if (
        keep_chunked_context
        and chunked_context
        and req.use_paged_context_fmha
        and profile_kv != "auto"
        and not kv_keeps_paged_context(sm, qformat, profile_kv, req)
        and kv_keeps_paged_context(sm, qformat, "auto", req)
    ):
        return Decision(
            "auto",
            f"{kv_cache_text(profile_kv, dtype)} with {qformat} weights would switch paged context FMHA off, and with it "
            f"chunked context and KV-cache reuse; {dtype} keeps them at twice the KV memory per token "
            f"(--kv-cache-dtype {profile_kv} for the smaller cache without chunked context)",
        )
    return Decision(profile_kv, f"the target's KV dtype for quantised weights ({profile_kv})")


@dataclass(frozen=True)
class EngineSettings:
    """The effective settings of one engine, each with why it is so."""

    kv_cache_dtype: Decision
    context_fmha: Decision
    use_paged_context_fmha: Decision
    use_fp8_context_fmha: Decision
    chunked_context: Decision
    max_num_tokens: Decision

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name).to_json() for name in self.__dataclass_fields__}


def engine_settings(*, sm: int, qformat: str, dtype: str, kv: Decision, req: AttentionRequest, chunked_context: bool,
                    max_num_tokens: int, max_batch_size: int, max_seq_len: int, max_input_len: int,
                    tokens_per_block: int) -> EngineSettings:  # fmt: skip
    """Apply upstream's rules to the request; every value returned is one upstream keeps as it is."""
    algo = FORMATS[qformat].quant_algo
    kv_algo = KV_QUANT_ALGO[kv.value]
    up = upstream_attention(sm, algo, kv_algo, req)
    weights = f"{qformat} weights" + (f" ({algo})" if algo else "")
    kv_text = kv_cache_text(kv.value, dtype)

    fmha = Decision(
        up.context_fmha, "the profile enables it" if up.context_fmha else "the profile disables it"
    )

    if up.use_paged_context_fmha:
        paged = Decision(True, f"kept by trtllm-build with {weights} and {kv_text}")
    elif not req.use_paged_context_fmha:
        paged = Decision(False, "the profile disables it")
    else:
        paged = Decision(False, f"trtllm-build switches it off with {weights} and {kv_text} "
                                f"('{up.changes['use_paged_context_fmha']}')")  # fmt: skip

    fp8_change = up.changes.get("use_fp8_context_fmha")
    if up.use_fp8_context_fmha and fp8_change:
        fp8 = Decision(True, f"trtllm-build switches it on with {weights}, {kv_text} and paged context FMHA "
                             f"on sm{sm} ('{fp8_change}'); the profile's use_fp8_context_fmha: false cannot hold")  # fmt: skip
    elif up.use_fp8_context_fmha:
        fp8 = Decision(True, f"{weights} and {kv_text} on sm{sm} run the context attention in FP8")
    elif fp8_change:
        fp8 = Decision(False, f"trtllm-build switches it off ('{fp8_change}')")
    else:
        fp8 = Decision(False, "the profile disables it")

    if not chunked_context:
        chunked = Decision(False, "the profile disables it")
    elif up.use_paged_context_fmha:
        chunked = Decision(True, "the profile enables it and the engine keeps paged context FMHA")
    else:
        fix, remedy = "", None
        if kv.value != "auto" and kv_keeps_paged_context(sm, qformat, "auto", req):
            remedy = "--kv-cache-dtype auto"
            fix = f"; {remedy} keeps it, at {dtype} KV size"
        chunked = Decision(False, "the runtime refuses chunked context on an engine without paged context FMHA"
                                  f"{fix}", remedy)  # fmt: skip

    value, moved = upstream_max_num_tokens(max_num_tokens, max_batch_size=max_batch_size, max_seq_len=max_seq_len,
                                           max_input_len=max_input_len, tokens_per_block=tokens_per_block,
                                           context_fmha=up.context_fmha)  # fmt: skip
    if moved:
        tokens = Decision(value, f"{max_num_tokens} {moved}, as trtllm-build would")
    else:
        floor = tokens_per_block if up.context_fmha else max_input_len
        tokens = Decision(value, f"within trtllm-build's bounds ({floor} .. max_batch_size x max_seq_len = "
                                 f"{max_batch_size * max_seq_len})")  # fmt: skip
    if value > MAX_NUM_TOKENS_ADVISED:
        tokens = Decision(value, tokens.reason + f"; above {MAX_NUM_TOKENS_ADVISED} trtllm-build warns (no gain "
                                                 "expected, and large values can exceed TensorRT's tensor volume)")  # fmt: skip
    return EngineSettings(kv, fmha, paged, fp8, chunked, tokens)


# --- timing cache -------------------------------------------------------------------------------


@cache
def pinned_tensorrt() -> str:
    """TensorRT of the Dockerfile's default image, from the contract's confirmed image rows."""
    data = json.loads(CONTRACT.read_text(encoding="utf-8"))
    image = data["triton_image"]
    for key, rows in image.items():
        if key.startswith("confirmed_rows"):
            for row in rows:
                if row.get("tag") == PINNED_IMAGE_TAG:
                    return str(row["tensorrt"])
    raise KeyError(f"{PINNED_IMAGE_TAG} is not a confirmed image row of {CONTRACT.name}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def timing_cache_name(gpu: str, sm: int, tensorrt: str) -> str:
    """TensorRT opens the timing cache with ignore_mismatch=False: a cache from another GPU model or
    TensorRT version is rejected, so one file per GPU model and TensorRT version."""
    return f"{_slug(gpu)}-sm{sm}-trt{_slug(tensorrt)}.cache"
