"""The pre-flight planner: validation rules, memory per GPU, roofline floors and the stage commands.

Pure: no GPU, no heavy imports. Every figure is derived from the model's architecture facts, the
format and the target profile; the arithmetic is documented next to each function so that a test can
redo it by hand.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from swallow_trt.arch import ModelArch, runtimes_for_class
from swallow_trt.builders.engine_args import EngineSpec, trtllm_build_argv
from swallow_trt.builders.engine_rules import (
    AttentionRequest,
    EngineSettings,
    choose_kv_cache_dtype,
    engine_settings,
    pinned_tensorrt,
    timing_cache_name,
)
from swallow_trt.checks import output_dir
from swallow_trt.errors import DoesNotFitError, InvalidCombinationError, UsageError
from swallow_trt.hw import host_ram_bytes
from swallow_trt.profiles import GpuSpec, Profile, get_target, load_profile_file
from swallow_trt.quantize.formats import (
    AWQ_GROUP_SIZE,
    DTYPE_BYTES,
    FORMATS,
    FORMATS_BY_CLASS,
    KV_BY_CLASS,
    KV_BY_SM,
    PYTORCH_FORMATS_BY_CLASS,
    kv_bytes_per_element,
)
from swallow_trt.registry import ResolvedModel, check_buildable, resolve_model
from swallow_trt.settings import load_settings

GIB = 2**30
# Host RAM of the quantize stage as a multiple of the BF16 checkpoint plus a fixed allowance (torch,
# modelopt, tokenizer). Measured on CPU by benchmarks/quantize_memory.py (0.49 B model: peak RSS 3.14x
# the model's bytes for fp8, 1.82x for full_prec, about 0.75 GiB of it fixed). With calibration the
# quantizers and export copies roughly double the weights; on a GPU host most weights live in GPU
# memory, so these figures are an upper bound there.
HOST_RAM_FACTOR = {"calibrated": 2.2, "plain": 1.1}
HOST_RAM_FIXED = 1 * GIB
MAX_TP = 8

DEFAULT_OUT = Path("swallow-trt-out")
RUNTIMES = ("auto", "engine", "pytorch")
# Suggestion order when a model does not fit: accuracy first, then size.
FORMAT_PREFERENCE = ("fp8", "int8_sq", "int4_awq", "w4a8_awq", "int8_wo", "int4_wo")


@dataclass(frozen=True)
class PlanRequest:
    model: str
    target: str | None = None
    profile_path: Path | None = None
    gpu: str | None = None
    gpus: int | None = None
    tp: int | None = None
    pp: int | None = None
    qformat: str | None = None
    kv_cache_dtype: str | None = None
    dtype: str | None = None
    max_batch_size: int | None = None
    max_input_len: int | None = None
    max_seq_len: int | None = None
    max_num_tokens: int | None = None
    moe_tp_size: int | None = None
    moe_ep_size: int | None = None
    out: Path = DEFAULT_OUT
    # "engine" for callers that build engines (build, quickstart): a model without an engine model is
    # refused there. `plan --runtime` passes the user's choice, "auto" by default.
    runtime: str = "engine"


def choose_runtime(model: ResolvedModel, requested: str) -> str:
    """``--runtime auto|engine|pytorch``: auto is the engine where an engine model exists, else pytorch."""
    name = requested.strip().lower()
    if name not in RUNTIMES:
        raise UsageError(f"unknown --runtime {requested!r}", "choose engine, pytorch or auto (the default)")
    arch = model.arch
    available = model.registered.runtimes if model.registered else runtimes_for_class(arch.hf_class)
    if name == "auto":
        return "engine" if "engine" in available else "pytorch"
    if name not in available:
        if name == "engine":
            raise InvalidCombinationError(
                f"--runtime engine: {model.display_name} ({arch.hf_class}) has no TensorRT engine model in "
                "TensorRT-LLM; it runs on the PyTorch (LLM-API) runtime only",
                "use --runtime pytorch (the default for it)",
            )
        raise InvalidCombinationError(
            f"--runtime {name}: swallow-trt runs {model.display_name} ({arch.hf_class}) on "
            + " and ".join(available)
            + " only",
            "use --runtime " + available[0],
        )
    return name


def choose_qformat(fp8: bool, int4_awq: bool, qformat: str | None) -> str | None:
    """The ``--fp8 | --int4-awq | --qformat`` option family: at most one meaning."""
    picked = {name for name, on in (("fp8", fp8), ("int4_awq", int4_awq)) if on}
    if qformat is not None:
        name = qformat.strip().lower().replace("-", "_")
        if name not in FORMATS:
            raise UsageError(f"unknown --qformat {qformat!r}", "choose one of: " + ", ".join(FORMATS))
        picked.add(name)
    if len(picked) > 1:
        raise UsageError(
            "conflicting format options: " + " and ".join(sorted(picked)),
            "pass one of --fp8, --int4-awq or --qformat",
        )
    return picked.pop() if picked else None


@dataclass(frozen=True)
class Layout:
    """Where the bytes of one rank come from (the largest pipeline stage)."""

    tp: int
    pp: int
    layers_per_stage: int
    vocab_padded: int
    kv_heads_per_rank: int
    moe_tp: int
    moe_ep: int


@dataclass(frozen=True)
class GpuPlan:
    gpu: GpuSpec
    fits: bool
    weight_bytes: int  # resident weights on the fullest rank
    weight_read_bytes: int  # weights streamed per decode step on that rank (embedding table excluded)
    activation_bytes: int
    overhead_bytes: int
    kv_budget_bytes: int
    kv_tokens: int
    kv_sequences: int  # sequences of max_seq_len the KV cache holds
    concurrent_sequences: int  # min(kv_sequences, max_batch_size)
    kv_window_bytes_per_sequence: int  # sliding-window layers of one sequence on this rank (0 without)
    shortfall_bytes: int
    decode_floor_s: float  # batch 1, context max_input_len
    decode_floor_batch_s: float  # batch = concurrent_sequences
    prefill_floor_s: float  # one prompt of max_input_len
    tokens_per_s_ceiling: float  # output tokens/s of one engine instance at concurrent_sequences
    tokens_per_s_single: float  # 1 / decode_floor_s
    compute_tflops: float


@dataclass(frozen=True)
class HostPlan:
    hf_checkpoint_bytes: int
    trtllm_checkpoint_bytes: int
    engine_bytes: int
    disk_bytes: int
    ram_bytes: int
    host_ram_bytes: int | None

    @property
    def ram_ok(self) -> bool | None:
        return None if self.host_ram_bytes is None else self.ram_bytes <= self.host_ram_bytes


@dataclass(frozen=True)
class Plan:
    model: ResolvedModel
    profile: Profile
    qformat: str
    kv_cache_dtype: str
    dtype: str
    tp: int
    pp: int
    gpu_count: int
    moe_tp_size: int
    moe_ep_size: int
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    kv_bytes_per_token: int  # whole model; full-attention layers only where sliding layers are bounded
    kv_bytes_per_token_per_gpu: int
    kv_window_bytes_per_sequence: int  # sliding layers: at most the window per sequence (whole model)
    params: int
    gpus: list[GpuPlan]
    host: HostPlan
    engine: EngineSpec
    settings: EngineSettings  # effective attention settings and max_num_tokens, with their reasons
    commands: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)
    runtime: str = "engine"

    @property
    def world_size(self) -> int:
        return self.tp * self.pp


# --- arithmetic ---------------------------------------------------------------------------------


def padded_vocab(vocab: int, tp: int, qformat: str) -> int:
    """ModelOpt pads the vocab to a multiple of 64 for AWQ formats and to a multiple of TP for the split."""
    multiple = tp
    if qformat in ("int4_awq", "w4a8_awq"):
        multiple = math.lcm(64, tp)
    return -(-vocab // multiple) * multiple


def kv_heads_per_rank(arch: ModelArch, tp: int) -> int:
    """KV heads are split when TP divides them and replicated (one per rank) when TP exceeds them."""
    return max(1, arch.num_key_value_heads // tp)


def kv_bytes_per_token(arch: ModelArch, kv_elem_bytes: int) -> int:
    """2 (K and V) x layers x KV heads x head_dim x bytes (gpus.json). Layers with a bounded sliding
    window (GPT-OSS) are left out: their cost per sequence is :func:`kv_window_tokens` tokens."""
    return 2 * arch.full_attention_layers * arch.num_key_value_heads * arch.head_dim * kv_elem_bytes


def kv_window_tokens(arch: ModelArch, max_seq_len: int, tokens_per_block: int) -> int:
    """Tokens a sliding layer holds for one sequence: the window (or the sequence, if shorter) in
    whole blocks."""
    if not arch.sliding_layers or arch.sliding_window is None:
        return 0
    return -(-min(arch.sliding_window, max_seq_len) // tokens_per_block) * tokens_per_block


def stage_attention_layers(arch: ModelArch, pp: int) -> tuple[int, int]:
    """(full, sliding) attention layers of the fullest pipeline stage."""
    per_stage = -(-arch.num_hidden_layers // pp)
    full = min(per_stage, -(-arch.full_attention_layers // pp))
    return full, min(arch.sliding_layers, per_stage - full)


def layout_for(arch: ModelArch, tp: int, pp: int, qformat: str, moe_tp: int, moe_ep: int) -> Layout:
    return Layout(
        tp=tp,
        pp=pp,
        layers_per_stage=-(-arch.num_hidden_layers // pp),
        vocab_padded=padded_vocab(arch.vocab_size, tp, qformat),
        kv_heads_per_rank=kv_heads_per_rank(arch, tp),
        moe_tp=moe_tp,
        moe_ep=moe_ep,
    )


def rank_weight_bytes(arch: ModelArch, lay: Layout, qformat: str, dtype_bytes: int) -> tuple[int, int]:
    """(resident bytes, bytes read per decode step) of the fullest rank.

    Quantised: the attention and MLP/expert GEMMs. Kept in the model dtype under every ModelOpt
    format: embedding (parallel embedding, split over TP), lm_head (excluded from quantisation, split
    over TP), norms and MoE routers (replicated). The embedding table is gathered, not streamed, so it
    is left out of the bytes read per step; for MoE only the top-k experts are read at batch 1.
    """
    wb = FORMATS[qformat].weight_bytes if qformat != "full_prec" else dtype_bytes
    # MXFP4 quantises the experts only; attention stays in the model dtype.
    attn_wb = dtype_bytes if FORMATS[qformat].experts_only else wb
    hd, hidden = arch.head_dim, arch.hidden_size
    q_o = 2 * hidden * arch.num_attention_heads * hd // lay.tp
    kv = 2 * hidden * lay.kv_heads_per_rank * hd
    attn = q_o + kv
    one_expert = 3 * hidden * arch.expert_intermediate_size
    if arch.is_moe:
        mlp_resident = arch.num_local_experts * one_expert // (lay.moe_tp * lay.moe_ep)
        mlp_read = arch.num_experts_per_tok * one_expert // lay.moe_tp
        mlp_read = min(mlp_read, mlp_resident)
    else:
        mlp_resident = mlp_read = one_expert // lay.tp
    # Norms, routers, biases and sinks: replicated (an upper bound for the TP-split biases: tens of MB).
    per_layer_small = arch.small_params_per_layer
    layers = lay.layers_per_stage
    linear_resident = layers * (attn * attn_wb + mlp_resident * wb)
    linear_read = layers * (attn * attn_wb + mlp_read * wb)
    small = layers * per_layer_small * dtype_bytes
    embed = lay.vocab_padded // lay.tp * hidden * dtype_bytes
    head = 0 if arch.tie_word_embeddings else embed
    final_norm = hidden * dtype_bytes
    if lay.pp == 1:
        resident = linear_resident + small + embed + head + final_norm
        read = linear_read + small + head + final_norm
    else:
        # First stage holds the embedding, the last the lm_head; the larger of the two is the fullest.
        resident = linear_resident + small + max(embed, head + final_norm)
        read = linear_read + small + head + final_norm
    return int(resident), int(read)


def activation_bytes(
    arch: ModelArch, lay: Layout, max_num_tokens: int, max_batch_size: int, dtype_bytes: int
) -> int:
    """TensorRT reuses activation memory across layers: one layer's peak for max_num_tokens packed
    tokens (hidden in/out, the QKV projection, gate+up of the MLP), plus FP32 logits for the batch.
    TensorRT-LLM's memory doc states the shape of this term (max_num_tokens x a constant)."""
    qkv = (arch.num_attention_heads // lay.tp + 2 * lay.kv_heads_per_rank) * arch.head_dim
    inter = arch.expert_intermediate_size // (lay.moe_tp if arch.is_moe else lay.tp)
    per_token = (2 * arch.hidden_size + qkv + 2 * inter) * dtype_bytes
    logits = max_batch_size * (lay.vocab_padded // lay.tp) * 4
    return max_num_tokens * per_token + logits


def compute_tflops(gpu: GpuSpec, qformat: str) -> float:
    kind = FORMATS[qformat].compute
    if kind == "fp8" and gpu.fp8_tflops:
        return gpu.fp8_tflops
    if kind == "int8":
        return 2 * gpu.bf16_tflops  # INT8 dense tensor throughput is twice BF16 on sm80-sm90
    return gpu.bf16_tflops


def prefill_floor_s(arch: ModelArch, prompt: int, tflops: float, tp: int) -> float:
    """(2 x GEMM params x prompt + 2 x lm_head + 2 x layers x prompt^2 x hidden) / (TFLOPS x tp).

    gpus.json's formula with params = the GEMM weights touched per token: the embedding is a lookup
    and the lm_head runs for the last prompt token only, so leaving them out keeps it a floor."""
    flops = 2 * arch.active_linear_params * prompt + 2 * arch.lm_head_params
    flops += 2 * arch.num_hidden_layers * prompt * prompt * arch.hidden_size
    return flops / (tflops * 1e12 * tp)


# --- validation -------------------------------------------------------------------------------


def tp_problem(arch: ModelArch, tp: int, qformat: str) -> str | None:
    """Why ``tp`` cannot shard ``arch`` in ``qformat``, or None."""
    if arch.num_attention_heads % tp:
        return f"TP {tp} does not divide the {arch.num_attention_heads} attention heads"
    kv = arch.num_key_value_heads
    if kv % tp and tp % kv:
        return f"TP {tp} can neither split nor replicate the {kv} KV heads"
    if qformat in ("int4_awq", "w4a8_awq"):
        for dim_name, dim in (
            ("moe_intermediate_size" if arch.moe_intermediate_size else "intermediate_size",
             arch.expert_intermediate_size),
            ("hidden_size", arch.hidden_size),
            ("num_attention_heads x head_dim", arch.num_attention_heads * arch.head_dim),
        ):  # fmt: skip
            if dim % tp or (dim // tp) % AWQ_GROUP_SIZE:
                return (
                    f"{qformat} at TP {tp}: {dim_name} / tp = {dim / tp:g} is not a multiple of the "
                    f"AWQ group size {AWQ_GROUP_SIZE}"
                )
    return None


def valid_tps(arch: ModelArch, qformat: str, limit: int = MAX_TP) -> list[int]:
    return [tp for tp in range(1, limit + 1) if tp_problem(arch, tp, qformat) is None]


def check_tp(arch: ModelArch, tp: int, qformat: str, name: str) -> None:
    problem = tp_problem(arch, tp, qformat)
    if problem is None:
        return
    ok = valid_tps(arch, qformat)
    hint = ("use --tp " + " or ".join(map(str, ok))) if ok else "no TP up to 8 works"
    if "AWQ" in problem:
        hint += " or another format (--fp8, --qformat int8_sq)"
    raise InvalidCombinationError(f"{problem} of {name}", hint)


def _format_hint(profile: Profile, arch: ModelArch) -> str:
    ok = [f for f in profile.formats.supported if f in FORMATS_BY_CLASS[arch.hf_class]]
    return "formats for this model on this target: " + ", ".join(ok)


def default_qformat(profile: Profile, arch: ModelArch, runtime: str) -> str:
    """A checkpoint that ships quantised keeps its format; on the PyTorch runtime the target's default
    applies only where that runtime loads it for the architecture."""
    if arch.checkpoint_quant == "mxfp4":
        return "mxfp4"
    if runtime == "pytorch":
        allowed = PYTORCH_FORMATS_BY_CLASS.get(arch.hf_class, ())
        if profile.formats.default not in allowed:
            return "full_prec"
    return profile.formats.default


def check_shipped_format(arch: ModelArch, qformat: str, name: str) -> None:
    """A format that exists only as a checkpoint ships it, and a shipped-quantised checkpoint, pair up."""
    if FORMATS[qformat].as_shipped and arch.checkpoint_quant != qformat:
        raise InvalidCombinationError(
            f"{qformat} is used only as a checkpoint ships it, and {name} is not an {qformat} checkpoint",
            "plan the -MXFP4 repo (e.g. tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4), or --qformat full_prec",
        )
    if arch.checkpoint_quant == "mxfp4" and qformat != "mxfp4":
        raise InvalidCombinationError(
            f"{name} ships MXFP4 experts; it is run as shipped, not re-quantised to {qformat}",
            "use --qformat mxfp4 (its default), or the BF16 repo for other formats",
        )


def check_format_pytorch(profile: Profile, arch: ModelArch, qformat: str, name: str) -> None:
    """The PyTorch runtime: the formats its loader reads for the architecture, on SMs with the kernels."""
    allowed = PYTORCH_FORMATS_BY_CLASS.get(arch.hf_class, ())
    if qformat not in allowed:
        raise InvalidCombinationError(
            f"{qformat} is not a PyTorch-runtime format for {arch.hf_class} ({name})",
            "formats for it on the pytorch runtime: " + ", ".join(allowed),
        )
    check_shipped_format(arch, qformat, name)
    if profile.sm not in FORMATS[qformat].sms:
        raise InvalidCombinationError(
            f"{qformat} is not supported on target {profile.name} (sm{profile.sm})",
            f"{qformat} runs on sm"
            + "/sm".join(map(str, FORMATS[qformat].sms))
            + "; use --qformat full_prec",
        )


def check_format(profile: Profile, arch: ModelArch, qformat: str, name: str, explicit: bool) -> None:
    fmt = FORMATS[qformat]
    if fmt.as_shipped:
        check_format_arch(arch, qformat, name, explicit, hint=_format_hint(profile, arch), sm=profile.sm)
    if qformat not in profile.formats.supported or profile.sm not in fmt.sms:
        if qformat in ("fp8", "w4a8_awq", "nvfp4") and profile.sm < 89:
            raise InvalidCombinationError(
                f"{qformat} needs Ada (sm89) or Hopper (sm90); target {profile.name} is sm{profile.sm}",
                "use --int4-awq or --qformat int8_sq on Ampere",
            )
        raise InvalidCombinationError(
            f"{qformat} is not supported on target {profile.name} (sm{profile.sm})",
            _format_hint(profile, arch),
        )
    check_format_arch(arch, qformat, name, explicit, hint=_format_hint(profile, arch), sm=profile.sm)


def check_format_arch(arch: ModelArch, qformat: str, name: str, explicit: bool = True, hint: str | None = None,
                      sm: int | None = None) -> None:  # fmt: skip
    """Formats ModelOpt cannot export to a TensorRT-LLM checkpoint for this architecture are refused."""
    if qformat in FORMATS_BY_CLASS[arch.hf_class]:
        return
    if not FORMATS_BY_CLASS[arch.hf_class]:
        raise InvalidCombinationError(
            f"{name} ({arch.hf_class}) has no TensorRT engine model: nothing can be quantised or built "
            "for the engine runtime",
            "plan it with `swallow-trt plan --runtime pytorch`; it runs on the PyTorch runtime only",
        )
    if FORMATS[qformat].as_shipped:
        raise InvalidCombinationError(
            f"{qformat} is a shipped checkpoint format of the PyTorch runtime; no engine can use it ({name})",
            hint or "formats for this architecture: " + ", ".join(FORMATS_BY_CLASS[arch.hf_class]),
        )
    what = "the target's default format " if not explicit else ""
    if arch.hf_class == "MixtralForCausalLM" and "awq" in qformat:
        raise InvalidCombinationError(
            f"{what}{qformat}: ModelOpt has no AWQ for Mixtral ({name})",
            "use --qformat int8_wo on Ampere"
            if sm is not None and sm < 89
            else "use --fp8 or --qformat int8_wo",
        )
    raise InvalidCombinationError(
        f"{what}{qformat} cannot be exported to a TensorRT-LLM checkpoint for {arch.hf_class} ({name})",
        hint or "formats for this architecture: " + ", ".join(FORMATS_BY_CLASS[arch.hf_class]),
    )


# modelopt 0.47's TensorRT-LLM-checkpoint export of Qwen3-MoE fails ('Qwen3MoeMLP' object has no
# attribute 'w2'), so nothing quantised reaches the engine path for it; its unified HF export works.
NO_ENGINE_EXPORT = {"Qwen3MoeForCausalLM": "'Qwen3MoeMLP' object has no attribute 'w2'"}


def check_engine_export(arch: ModelArch, qformat: str, name: str) -> None:
    """Refuse, before anything runs, an engine-path quantisation that ModelOpt cannot export."""
    if arch.hf_class in NO_ENGINE_EXPORT and qformat != "full_prec":
        raise InvalidCombinationError(
            f"{qformat} for {name} ({arch.hf_class}) on the engine runtime: ModelOpt 0.47's TensorRT-LLM "
            f"checkpoint export fails on it ({NO_ENGINE_EXPORT[arch.hf_class]})",
            "use `swallow-trt build --runtime pytorch` (ModelOpt's HF export, served by trtllm-serve), or --qformat full_prec",
        )


def check_kv(profile: Profile, arch: ModelArch, kv: str, name: str) -> None:
    check_kv_arch(arch, kv, name)
    if kv not in KV_BY_SM.get(profile.sm, ("auto",)):
        raise InvalidCombinationError(
            f"a {kv} KV cache is not supported by engines on sm{profile.sm} (target {profile.name})",
            "use --kv-cache-dtype " + " or ".join(KV_BY_SM.get(profile.sm, ("auto",))),
        )


def check_kv_arch(arch: ModelArch, kv: str, name: str) -> None:
    if kv not in ("auto", "fp8", "int8"):
        raise UsageError(f"unknown --kv-cache-dtype {kv!r}", "choose fp8, int8 or auto (the model dtype)")
    if kv not in KV_BY_CLASS[arch.hf_class]:
        raise InvalidCombinationError(
            f"a {kv} KV cache cannot be exported for {arch.hf_class} ({name})",
            "use --kv-cache-dtype " + " or ".join(KV_BY_CLASS[arch.hf_class]),
        )


def check_pp(arch: ModelArch, pp: int, name: str) -> None:
    if arch.num_hidden_layers % pp:
        raise InvalidCombinationError(
            f"PP {pp} does not divide the {arch.num_hidden_layers} layers of {name}",
            "use a pipeline-parallel size that divides the layer count",
        )


def _moe_sizes(
    arch: ModelArch, tp: int, moe_tp: int | None, moe_ep: int | None, name: str
) -> tuple[int, int]:
    if not arch.is_moe:
        if moe_tp is not None or moe_ep is not None:
            raise UsageError(
                f"--moe-tp-size/--moe-ep-size apply to MoE models only; {name} is dense", "drop them"
            )
        return 1, 1
    if moe_tp is None and moe_ep is None:
        moe_tp, moe_ep = tp, 1
    elif moe_tp is None:
        assert moe_ep is not None
        moe_tp = tp // moe_ep if moe_ep and tp % moe_ep == 0 else 0
    elif moe_ep is None:
        moe_ep = tp // moe_tp if moe_tp and tp % moe_tp == 0 else 0
    assert moe_tp is not None
    assert moe_ep is not None
    if moe_tp < 1 or moe_ep < 1 or moe_tp * moe_ep != tp:
        raise InvalidCombinationError(
            f"MoE parallelism: moe_tp_size x moe_ep_size must equal tp ({tp}), got {moe_tp or '?'} x {moe_ep or '?'}",
            f"choose sizes whose product is {tp}, e.g. --moe-tp-size {tp} --moe-ep-size 1",
        )
    if arch.num_local_experts % moe_ep:
        raise InvalidCombinationError(
            f"moe_ep_size {moe_ep} does not divide the {arch.num_local_experts} experts of {name}",
            "use an expert-parallel size that divides the expert count",
        )
    return moe_tp, moe_ep


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{name} must be at least 1, got {value}", f"pass a positive {name}")


# --- the plan -----------------------------------------------------------------------------------


def load_target(req: PlanRequest) -> Profile:
    if req.profile_path is not None and req.target is not None:
        raise UsageError("--target and --profile both given", "pass one: a shipped target or your own YAML")
    if req.profile_path is not None:
        return load_profile_file(req.profile_path)
    if req.target is not None:
        return get_target(req.target)
    from swallow_trt.hw import detect_gpus

    detected = detect_gpus()
    if not detected:
        raise UsageError(
            "no NVIDIA GPU detected, so the target cannot be inferred",
            "pass --target ampere|ampere-sm86|ada|hopper|h100x4 (see `swallow-trt targets`)",
        )
    by_sm = {80: "ampere", 86: "ampere-sm86", 89: "ada", 90: "hopper"}
    sm = detected[0].sm
    if sm not in by_sm:
        raise UsageError(
            f"detected {detected[0].name} (sm{sm}) has no shipped profile", "pass --profile FILE"
        )
    return replace(get_target(by_sm[sm]), gpu_count=len(detected))


def make_plan(req: PlanRequest, *, suggest: bool = True) -> Plan:
    """Validate ``req`` and compute the plan; ``suggest`` searches alternatives when it does not fit."""
    for name in ("tp", "pp", "gpus", "max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens",
                 "moe_tp_size", "moe_ep_size"):  # fmt: skip
        _positive("--" + name.replace("_", "-"), getattr(req, name))
    output_dir(req.out)
    model = resolve_model(req.model)
    runtime = choose_runtime(model, req.runtime)
    check_buildable(model)
    arch = model.arch
    name = model.display_name
    profile = load_target(req)
    notes: list[str] = []
    gpu_count = req.gpus or profile.gpu_count
    tp = req.tp or profile.tp
    pp = req.pp or profile.pp
    if tp * pp > gpu_count:
        where = f"--gpus {tp * pp}" + (" or --target h100x4" if profile.sm == 90 and tp * pp <= 4 else "")
        raise InvalidCombinationError(
            f"TP x PP = {tp * pp} exceeds the {gpu_count} GPU(s) of target {profile.name}",
            f"use {where} for a larger machine, or a smaller --tp",
        )
    explicit_format = req.qformat is not None
    qformat = req.qformat or default_qformat(profile, arch, runtime)
    if runtime == "engine" and arch.hf_class in NO_ENGINE_EXPORT and qformat != "full_prec":
        if req.runtime.strip().lower() == "auto":
            # The engine model exists but ModelOpt cannot export a quantised checkpoint for it: auto
            # takes the runtime whose export works rather than a plan that build would refuse.
            runtime = "pytorch"
            qformat = req.qformat or default_qformat(profile, arch, runtime)
        else:
            check_engine_export(arch, qformat, name)
    if runtime == "pytorch" and arch.hf_class in PYTORCH_FORMATS_BY_CLASS:
        check_format_pytorch(profile, arch, qformat, name)
    else:
        check_format(profile, arch, qformat, name, explicit_format)
        check_shipped_format(arch, qformat, name)
    check_tp(arch, tp, qformat, name)
    check_pp(arch, pp, name)
    moe_tp, moe_ep = _moe_sizes(arch, tp, req.moe_tp_size, req.moe_ep_size, name)
    dtype = req.dtype or (arch.torch_dtype if arch.torch_dtype in ("bfloat16", "float16") else "bfloat16")
    if dtype not in ("bfloat16", "float16"):
        raise UsageError(f"unknown --dtype {dtype!r}", "choose bfloat16 or float16")
    b = profile.build
    attention = AttentionRequest(b.context_fmha, b.use_paged_context_fmha, b.use_fp8_context_fmha)
    kv_choice = choose_kv_cache_dtype(
        sm=profile.sm, qformat=qformat, dtype=dtype, requested=req.kv_cache_dtype,
        profile_kv=profile.formats.kv_cache_dtype, allowed=KV_BY_CLASS[arch.hf_class],
        keep_chunked_context=profile.formats.keep_chunked_context,
        chunked_context=profile.runtime.enable_chunked_context, req=attention,
    )  # fmt: skip
    kv = kv_choice.value
    check_kv(profile, arch, kv, name)
    dtype_bytes = DTYPE_BYTES[dtype]

    positions = arch.max_position_embeddings
    if req.max_seq_len is not None and req.max_seq_len > positions:
        raise InvalidCombinationError(
            f"--max-seq-len {req.max_seq_len} exceeds the {positions} positions of {name}",
            f"use --max-seq-len {positions} or less",
        )
    card_cap = model.registered.family.max_context if model.registered else None
    cap = min(positions, card_cap) if card_cap else positions
    max_seq_len = req.max_seq_len or min(b.max_seq_len, cap)
    if req.max_seq_len is None and b.max_seq_len > cap:
        why = "the card's recommended maximum context" if cap < positions else "the model's positions"
        notes.append(f"max_seq_len capped at {why}, {cap} (profile says {b.max_seq_len})")
    if req.max_seq_len is not None and card_cap and req.max_seq_len > card_cap:
        notes.append(f"--max-seq-len {req.max_seq_len} is beyond the {card_cap} tokens the card recommends")
    if req.max_input_len is not None and req.max_input_len >= max_seq_len:
        raise InvalidCombinationError(
            f"--max-input-len {req.max_input_len} leaves no room for output within max_seq_len {max_seq_len}",
            f"use --max-input-len below {max_seq_len} or raise --max-seq-len",
        )
    max_input_len = req.max_input_len or min(b.max_input_len, max_seq_len // 2)
    max_batch_size = req.max_batch_size or b.max_batch_size
    settings = engine_settings(
        sm=profile.sm, qformat=qformat, dtype=dtype, kv=kv_choice, req=attention,
        chunked_context=profile.runtime.enable_chunked_context,
        max_num_tokens=req.max_num_tokens or b.max_num_tokens, max_batch_size=max_batch_size,
        max_seq_len=max_seq_len, max_input_len=max_input_len, tokens_per_block=b.tokens_per_block,
    )  # fmt: skip
    max_num_tokens = settings.max_num_tokens.value
    if max_num_tokens != (req.max_num_tokens or b.max_num_tokens):
        notes.append(f"max_num_tokens {settings.max_num_tokens.reason}")
    if max_num_tokens < max_input_len and not settings.chunked_context.value:
        raise InvalidCombinationError(
            f"max_num_tokens {max_num_tokens} is below max_input_len {max_input_len} and chunked context is "
            f"off: {settings.chunked_context.reason}",
            f"use --max-num-tokens {max_input_len} or more"
            + (f", or {settings.chunked_context.remedy}" if settings.chunked_context.remedy else ""),
        )
    if profile.runtime.enable_chunked_context and not settings.chunked_context.value:
        notes.append(f"chunked context is off: {settings.chunked_context.reason}")

    kv_elem = kv_bytes_per_element(kv, dtype)
    lay = layout_for(arch, tp, pp, qformat, moe_tp, moe_ep)
    kv_total = kv_bytes_per_token(arch, kv_elem)
    tpb = b.tokens_per_block
    # Per token of one KV head in one layer; sliding layers (GPT-OSS) hold one window per sequence.
    kv_unit = 2 * lay.kv_heads_per_rank * arch.head_dim * kv_elem
    full_layers, sliding_layers = stage_attention_layers(arch, pp)
    kv_rank = full_layers * kv_unit
    window = kv_window_tokens(arch, max_seq_len, tpb)
    window_rank = sliding_layers * kv_unit * window
    window_total = 2 * arch.sliding_layers * arch.num_key_value_heads * arch.head_dim * kv_elem * window
    resident, read = rank_weight_bytes(arch, lay, qformat, dtype_bytes)
    act = activation_bytes(arch, lay, max_num_tokens, max_batch_size, dtype_bytes)
    overhead = int(profile.runtime.activation_overhead_gib * GIB)
    blocks_per_seq = -(-max_seq_len // tpb)
    seq_bytes = blocks_per_seq * tpb * kv_rank + window_rank
    gpu_plans = []
    for gpu in profile.gpu(req.gpu):
        free = gpu.memory_bytes - resident - act - overhead
        budget = max(0, int(free * profile.runtime.kv_cache_free_gpu_mem_fraction))
        seqs = budget // seq_bytes
        # Tokens the full-attention layers hold once the windows of those sequences are set aside.
        blocks = (budget - seqs * window_rank) // (kv_rank * tpb) if kv_rank else seqs * blocks_per_seq
        fits = seqs >= 1
        need = resident + act + overhead + int(seq_bytes / profile.runtime.kv_cache_free_gpu_mem_fraction)
        concurrent = min(seqs, max_batch_size)
        bw = gpu.bandwidth_tb_s * 1e12
        # A token crosses every pipeline stage in turn: the latency floor sums them (pp x one stage).
        ctx = max_input_len
        ctx_kv = ctx * kv_rank + min(ctx, window) * sliding_layers * kv_unit
        decode_1 = pp * (read + ctx_kv) / bw
        tflops = compute_tflops(gpu, qformat)
        batch = max(concurrent, 1)
        active_rank_params = read / (FORMATS[qformat].weight_bytes if qformat != "full_prec" else dtype_bytes)
        decode_b_mem = (read + batch * ctx_kv) / bw
        decode_b_compute = 2 * active_rank_params * batch / (tflops * 1e12)
        decode_b = max(decode_b_mem, decode_b_compute)  # one stage; stages overlap across the batch
        gpu_plans.append(
            GpuPlan(
                gpu=gpu,
                fits=fits,
                weight_bytes=resident,
                weight_read_bytes=read,
                activation_bytes=act,
                overhead_bytes=overhead,
                kv_budget_bytes=budget,
                kv_tokens=blocks * tpb,
                kv_sequences=seqs,
                concurrent_sequences=concurrent,
                kv_window_bytes_per_sequence=window_rank,
                shortfall_bytes=max(0, need - gpu.memory_bytes),
                decode_floor_s=decode_1,
                decode_floor_batch_s=decode_b,
                # A prefill reads every weight too: never below one pass over them (issue 16).
                prefill_floor_s=max(prefill_floor_s(arch, max_input_len, tflops, tp), pp * read / bw),
                tokens_per_s_ceiling=concurrent / decode_b if fits else 0.0,
                tokens_per_s_single=1 / decode_1,
                compute_tflops=tflops,
            )
        )

    host = host_plan(arch, qformat, dtype_bytes, tp, pp)
    if host.ram_ok is False and runtime == "engine":
        notes.append(
            f"the quantize stage needs about {host.ram_bytes / GIB:.0f} GiB of host RAM; this host has "
            f"{(host.host_ram_bytes or 0) / GIB:.0f} GiB (quantize refuses without --force)"
        )
    engine = engine_spec(req, profile, model, qformat, kv, tp, pp, gpu_count,
                         max_batch_size, max_input_len, max_seq_len, settings)  # fmt: skip
    plan = Plan(
        model=model,
        profile=profile,
        qformat=qformat,
        kv_cache_dtype=kv,
        dtype=dtype,
        tp=tp,
        pp=pp,
        gpu_count=gpu_count,
        moe_tp_size=moe_tp,
        moe_ep_size=moe_ep,
        max_batch_size=max_batch_size,
        max_input_len=max_input_len,
        max_seq_len=max_seq_len,
        max_num_tokens=max_num_tokens,
        kv_bytes_per_token=kv_total,
        kv_bytes_per_token_per_gpu=kv_rank,
        kv_window_bytes_per_sequence=window_total,
        params=arch.total_params,
        gpus=gpu_plans,
        host=host,
        engine=engine,
        settings=settings,
        commands={},
        notes=notes,
        runtime=runtime,
    )
    if runtime == "pytorch":
        notes.append(
            "runtime pytorch (TensorRT-LLM's LLM API): weights, KV cache and fit are as for an engine; "
            "no trtllm-build commands apply; `build --runtime pytorch --dry-run` prints its files and commands"
        )
    plan = replace(plan, commands=stage_commands(plan, req))
    if not any(g.fits for g in gpu_plans):
        raise_does_not_fit(plan, req, suggest)
    for g in gpu_plans:
        if not g.fits:
            notes.append(f"does not fit on {g.gpu.name}: short by {g.shortfall_bytes / GIB:.1f} GiB")
    return plan


def host_plan(arch: ModelArch, qformat: str, dtype_bytes: int, tp: int, pp: int) -> HostPlan:
    lay = layout_for(arch, tp, 1, qformat, tp if arch.is_moe else 1, 1)
    wb = FORMATS[qformat].weight_bytes if qformat != "full_prec" else dtype_bytes
    experts = arch.num_hidden_layers * arch.mlp_params_per_layer if arch.is_moe else 0
    quantised = experts if FORMATS[qformat].experts_only else arch.linear_params
    kept = arch.total_params - quantised
    pad = (lay.vocab_padded - arch.vocab_size) * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
    ckpt = int(quantised * wb + (kept + pad) * dtype_bytes)
    # A checkpoint that ships MXFP4 experts is downloaded at that size.
    hf = ckpt if arch.checkpoint_quant == "mxfp4" else arch.total_params * 2
    settings = load_settings()
    host_ram = int(settings.host_ram_gib * GIB) if settings.host_ram_gib is not None else host_ram_bytes()
    if FORMATS[qformat].as_shipped:
        # Run as shipped: no quantize stage and no converted checkpoint, only the download.
        return HostPlan(hf, 0, 0, hf, 0, host_ram)
    return HostPlan(
        hf_checkpoint_bytes=hf,
        trtllm_checkpoint_bytes=ckpt,
        engine_bytes=ckpt,
        disk_bytes=hf + 2 * ckpt,
        ram_bytes=int(
            hf * HOST_RAM_FACTOR["calibrated" if FORMATS[qformat].modelopt_cfg else "plain"] + HOST_RAM_FIXED
        ),
        host_ram_bytes=host_ram,
    )


def stage_root(out: Path, model: ResolvedModel, qformat: str, kv: str, tp: int, pp: int) -> Path:
    """Where every stage of one model x format x parallelism lives: ``<out>/<model>-<fmt>-kv<kv>-tp<T>pp<P>``."""
    short = model.display_name.rstrip("/").split("/")[-1]
    return out / f"{short}-{qformat}-kv{kv}-tp{tp}pp{pp}"


def stage_dirs(
    req: PlanRequest, model: ResolvedModel, profile: Profile, qformat: str, kv: str, tp: int, pp: int
) -> dict[str, Path]:
    root = stage_root(req.out, model, qformat, kv, tp, pp)
    return {
        "root": root,
        "checkpoint": root / "checkpoint",
        "engine": root / f"engine-{profile.name}",
        "repo": root / "triton-repo",
    }


def timing_cache_gpu(req: PlanRequest, profile: Profile) -> str:
    """The GPU model a plan keys its timing cache by: the one named by --gpu, else the target's first;
    ``build`` re-keys it by the GPU it detects and the TensorRT it finds."""
    return profile.gpu(req.gpu)[0].name


def engine_spec(req: PlanRequest, profile: Profile, model: ResolvedModel, qformat: str, kv: str, tp: int, pp: int,
                gpu_count: int, max_batch_size: int, max_input_len: int, max_seq_len: int,
                effective: EngineSettings) -> EngineSpec:  # fmt: skip
    dirs = stage_dirs(req, model, profile, qformat, kv, tp, pp)
    b = profile.build
    settings = load_settings()
    cache_name = timing_cache_name(timing_cache_gpu(req, profile), profile.sm, pinned_tensorrt())
    return EngineSpec(
        checkpoint_dir=dirs["checkpoint"],
        output_dir=dirs["engine"],
        sm=profile.sm,
        qformat=qformat,
        kv_cache_dtype=kv,
        max_batch_size=max_batch_size,
        max_input_len=max_input_len,
        max_seq_len=max_seq_len,
        max_num_tokens=effective.max_num_tokens.value,
        max_beam_width=b.max_beam_width,
        tokens_per_block=b.tokens_per_block,
        gpt_attention_plugin=b.gpt_attention_plugin,
        context_fmha=effective.context_fmha.value,
        use_paged_context_fmha=effective.use_paged_context_fmha.value,
        use_fp8_context_fmha=effective.use_fp8_context_fmha.value,
        multiple_profiles=b.multiple_profiles,
        fp8_gemm_plugin=b.fp8_gemm_plugin,
        workers=max(1, min(tp * pp, gpu_count)),
        timing_cache=settings.home / "timing-cache" / cache_name,
    )


def stage_commands(plan: Plan, req: PlanRequest) -> dict[str, list[str]]:
    if plan.runtime != "engine":
        return {}  # the PyTorch runtime's stages are not trtllm-build's (see the plan's note)
    dirs = stage_dirs(req, plan.model, plan.profile, plan.qformat, plan.kv_cache_dtype, plan.tp, plan.pp)
    quantize = [
        "swallow-trt", "quantize", "--model", plan.model.hf_ref, "--qformat", plan.qformat,
        "--kv-cache-dtype", plan.kv_cache_dtype, "--tp", str(plan.tp), "--pp", str(plan.pp),
        "--dtype", plan.dtype, "--calib", "ja", "--calib-size", "512", "--calib-max-seq-len", "512",
        "--out", str(dirs["checkpoint"]),
    ]  # fmt: skip
    return {
        "quantize": quantize,
        "engine": trtllm_build_argv(plan.engine),
        "package": [
            "swallow-trt",
            "package",
            "--engine",
            str(dirs["engine"]),
            "--out",
            str(dirs["repo"]),
            "--backend",
            "tensorrtllm",
        ],
        "serve": ["swallow-trt", "serve", "--repo", str(dirs["repo"])],
    }


def command_line(argv: list[str]) -> str:
    return shlex.join(argv)


def raise_does_not_fit(plan: Plan, req: PlanRequest, suggest: bool) -> None:
    worst = min(plan.gpus, key=lambda g: g.shortfall_bytes)
    arch = plan.model.arch
    options: list[str] = []
    small_kv = plan.profile.formats.kv_cache_dtype
    if suggest and req.kv_cache_dtype is None and plan.kv_cache_dtype == "auto" and small_kv != "auto":
        # The model-dtype KV cache was chosen to keep chunked context; the smaller one may fit.
        try:
            alt = make_plan(replace(req, kv_cache_dtype=small_kv, gpu=worst.gpu.name), suggest=False)
        except UsageError:
            alt = None
        if alt is not None and any(g.fits for g in alt.gpus):
            options.append(f"--kv-cache-dtype {small_kv} (without chunked context)")
    current = FORMATS[plan.qformat].weight_bytes if plan.qformat != "full_prec" else 2.0
    candidates = [plan.qformat] + [
        f
        for f in FORMAT_PREFERENCE
        if f in plan.profile.formats.supported
        and f in FORMATS_BY_CLASS[arch.hf_class]
        and FORMATS[f].weight_bytes < current
    ]
    for fmt in candidates if suggest else []:
        for tp in valid_tps(arch, fmt):
            if tp < plan.tp or (fmt == plan.qformat and tp == plan.tp) or len(options) >= 3:
                continue
            try:
                alt = make_plan(replace(req, qformat=fmt, tp=tp, pp=1, gpus=max(tp, req.gpus or 1), gpu=worst.gpu.name,
                                        target=plan.profile.name if req.profile_path is None else None), suggest=False)  # fmt: skip
            except UsageError:
                continue
            if any(g.fits for g in alt.gpus):
                flag = {"fp8": "--fp8", "int4_awq": "--int4-awq"}.get(fmt, f"--qformat {fmt}")
                more = f" --gpus {tp}" if tp > plan.gpu_count else ""
                options.append(f"{flag} --tp {tp}{more}")
                break
    hint = (
        ("what would fit: " + "; ".join(options))
        if options
        else "no format/TP on this target fits; use a larger target"
    )
    raise DoesNotFitError(
        f"{plan.model.display_name} in {plan.qformat} at TP {plan.tp} does not fit on {worst.gpu.name} "
        f"({worst.gpu.memory_gib:g} GiB): needs {(worst.gpu.memory_bytes + worst.shortfall_bytes) / GIB:.1f} GiB "
        f"per GPU for weights ({worst.weight_bytes / GIB:.1f} GiB), runtime and one {plan.max_seq_len}-token "
        f"sequence of KV cache, short by {worst.shortfall_bytes / GIB:.1f} GiB",
        hint,
    )
