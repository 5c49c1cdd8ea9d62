"""Validate an exported TensorRT-LLM checkpoint against the HF config it came from.

The guard against silent breakage in the conversion path (e.g. modelopt 0.47 with transformers 5.x
drops Llama-3.1's rope scaling): architecture, vocabulary and padding, dimensions, rotary base and
scaling, positions, MoE, quantisation algorithms, and every ``rank{N}.safetensors`` with the tensor
names, shapes and dtypes the format implies. Reads JSON and safetensors headers only (no torch).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swallow_trt.arch import ModelArch
from swallow_trt.errors import StageFailed
from swallow_trt.quantize.checkpoint import safetensors_header
from swallow_trt.quantize.formats import AWQ_GROUP_SIZE, FORMATS, KV_QUANT_ALGO

ST_DTYPE = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
PACKED_INT4 = ("int4_awq", "w4a8_awq")
LAYER = re.compile(r"^transformer\.layers\.(\d+)\.")
# TensorRT-LLM's QWenConfig takes qwen_type (qk_layernorm for qwen3/qwen3_moe) and attn_bias (default
# True) from the checkpoint config, which modelopt 0.47's export leaves out (seen here on a tiny Qwen3).
QWEN_TYPE = {"Qwen3ForCausalLM": "qwen3", "Qwen3MoeForCausalLM": "qwen3_moe"}
# MoeConfig.ExpertScaleNormalizationMode (tensorrt_llm/layers/moe.py): NONE 0, RENORMALIZE 1. HF's
# norm_topk_prob: true renormalises the top-k router weights, i.e. RENORMALIZE; QWenConfig's own
# from_hugging_face sets NONE.
MOE_NONE, MOE_RENORMALIZE = 0, 1


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tensors: int = 0

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


@dataclass(frozen=True)
class Expected:
    arch: ModelArch
    qformat: str
    kv_cache_dtype: str
    tp: int
    pp: int
    dtype: str
    moe_tp: int = 0
    moe_ep: int = 1

    @property
    def quant_algo(self) -> str | None:
        return FORMATS[self.qformat].quant_algo

    @property
    def vocab_padded(self) -> int:
        multiple = math.lcm(64, self.tp) if self.qformat in PACKED_INT4 else self.tp
        return -(-self.arch.vocab_size // multiple) * multiple


def _close(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    except (TypeError, ValueError):
        return False


def moe_normalization(arch: ModelArch) -> int:
    return MOE_RENORMALIZE if arch.norm_topk_prob else MOE_NONE


def complete_config(out_dir: Path, arch: ModelArch) -> list[str]:
    """Write the Qwen3 fields TensorRT-LLM reads but the export omits; returns what was set."""
    qwen_type = QWEN_TYPE.get(arch.hf_class)
    if qwen_type is None:
        return []
    path = out_dir / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    wanted: dict[str, Any] = {"qwen_type": qwen_type, "attn_bias": False}
    if arch.is_moe:
        wanted["moe_intermediate_size"] = arch.expert_intermediate_size
        wanted["moe_shared_expert_intermediate_size"] = 0
    changed = [f"{k}={v}" for k, v in wanted.items() if cfg.get(k) != v]
    cfg.update(wanted)
    if arch.is_moe:
        moe = dict(cfg.get("moe") or {})
        if moe.get("normalization_mode") != moe_normalization(arch):
            changed.append(f"moe.normalization_mode={moe_normalization(arch)}")
        moe["normalization_mode"] = moe_normalization(arch)
        cfg["moe"] = moe
    path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return changed


def check_qwen3(cfg: dict[str, Any], a: ModelArch, rep: Report) -> None:
    want = QWEN_TYPE[a.hf_class]
    rep.check(
        cfg.get("architecture") == a.hf_class,
        f"architecture {cfg.get('architecture')!r}, HF has {a.hf_class}",
    )
    rep.check(
        cfg.get("qwen_type") == want, f"qwen_type {cfg.get('qwen_type')!r}, expected {want!r} (q/k norm)"
    )
    rep.check(
        cfg.get("attn_bias") is False, f"attn_bias {cfg.get('attn_bias')!r}: Qwen3 has no attention bias"
    )
    if a.is_moe:
        mode = (cfg.get("moe") or {}).get("normalization_mode")
        rep.check(
            mode == moe_normalization(a),
            f"moe.normalization_mode {mode!r}, HF norm_topk_prob {str(a.norm_topk_prob).lower()} needs "
            f"{moe_normalization(a)} ({'RENORMALIZE' if a.norm_topk_prob else 'NONE'})",
        )


def check_config(cfg: dict[str, Any], exp: Expected, rep: Report) -> None:
    a = exp.arch
    if a.hf_class in QWEN_TYPE:
        check_qwen3(cfg, a, rep)
    rep.check(
        cfg.get("architecture") in ("LlamaForCausalLM", a.hf_class),
        f"architecture {cfg.get('architecture')!r}, expected LlamaForCausalLM or {a.hf_class}",
    )
    vocab = cfg.get("vocab_size")
    if exp.qformat in PACKED_INT4:
        rep.check(
            vocab in (a.vocab_size, -(-a.vocab_size // 64) * 64), f"vocab_size {vocab}, HF has {a.vocab_size}"
        )
    else:
        rep.check(vocab == a.vocab_size, f"vocab_size {vocab}, HF has {a.vocab_size}")
    for key, want in (
        ("hidden_size", a.hidden_size),
        ("intermediate_size", a.intermediate_size),
        ("num_hidden_layers", a.num_hidden_layers),
        ("num_attention_heads", a.num_attention_heads),
        ("num_key_value_heads", a.num_key_value_heads),
        ("max_position_embeddings", a.max_position_embeddings),
        ("head_size", a.head_dim),
    ):
        rep.check(cfg.get(key) == want, f"{key} {cfg.get(key)!r}, HF has {want}")
    rep.check(
        _close(cfg.get("rotary_base"), a.rope_theta),
        f"rotary_base {cfg.get('rotary_base')!r}, HF rope_theta {a.rope_theta}",
    )
    scaling = cfg.get("rotary_scaling")
    if a.rope_scaling is None:
        rep.check(scaling in (None, {}), f"rotary_scaling {scaling!r}, HF has none")
    elif not isinstance(scaling, dict):
        rep.check(
            False,
            f"rotary_scaling missing: HF has {a.rope_scaling.rope_type} scaling (factor {a.rope_scaling.factor})",
        )
    else:
        want_type = a.rope_scaling.rope_type
        got_type = scaling.get("rope_type") or scaling.get("type")
        rep.check(got_type == want_type, f"rotary_scaling type {got_type!r}, HF has {want_type!r}")
        for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
            want = getattr(a.rope_scaling, key)
            if want is not None:
                rep.check(
                    _close(scaling.get(key), want),
                    f"rotary_scaling.{key} {scaling.get(key)!r}, HF has {want}",
                )
    mapping = cfg.get("mapping") or {}
    rep.check(
        (mapping.get("tp_size"), mapping.get("pp_size"), mapping.get("world_size"))
        == (exp.tp, exp.pp, exp.tp * exp.pp),
        f"mapping {mapping}, expected tp {exp.tp} pp {exp.pp}",
    )
    if a.is_moe:
        moe = cfg.get("moe") or {}
        rep.check(
            moe.get("num_experts") == a.num_local_experts,
            f"moe.num_experts {moe.get('num_experts')!r}, HF has {a.num_local_experts}",
        )
        rep.check(
            moe.get("top_k") == a.num_experts_per_tok,
            f"moe.top_k {moe.get('top_k')!r}, HF has {a.num_experts_per_tok}",
        )
        moe_tp = mapping.get("moe_tp_size", exp.tp)
        moe_ep = mapping.get("moe_ep_size", 1)
        rep.check(
            moe_tp * moe_ep == exp.tp, f"moe_tp_size x moe_ep_size = {moe_tp} x {moe_ep}, tp is {exp.tp}"
        )
    quant = cfg.get("quantization") or {}
    rep.check(
        quant.get("quant_algo") == exp.quant_algo,
        f"quant_algo {quant.get('quant_algo')!r}, expected {exp.quant_algo!r}",
    )
    want_kv = KV_QUANT_ALGO[exp.kv_cache_dtype]
    rep.check(
        quant.get("kv_cache_quant_algo") == want_kv,
        f"kv_cache_quant_algo {quant.get('kv_cache_quant_algo')!r}, expected {want_kv!r}",
    )
    if exp.qformat in PACKED_INT4:
        rep.check(
            quant.get("group_size") == AWQ_GROUP_SIZE,
            f"group_size {quant.get('group_size')!r}, expected {AWQ_GROUP_SIZE}",
        )
    rep.check(cfg.get("dtype") == exp.dtype, f"dtype {cfg.get('dtype')!r}, expected {exp.dtype!r}")
    if a.sliding_window and a.sliding_window < a.max_position_embeddings:
        rep.warnings.append(
            f"the HF config has sliding_window {a.sliding_window}: the checkpoint does not carry it; "
            "serve with max_attention_window_size set to it, or keep max_seq_len within it"
        )


def _linear_shapes(exp: Expected) -> dict[str, tuple[int, ...]]:
    """Logical (out, in) of every linear per rank; MoE experts get a leading expert dimension."""
    a, tp = exp.arch, exp.tp
    kv_rank = max(1, a.num_key_value_heads // tp)
    hd = a.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "attention.qkv": ((a.num_attention_heads // tp + 2 * kv_rank) * hd, a.hidden_size),
        "attention.dense": (a.hidden_size, a.num_attention_heads * hd // tp),
    }
    if a.is_moe:
        moe_tp = exp.moe_tp or tp
        experts = a.num_local_experts // exp.moe_ep
        inter = a.expert_intermediate_size // moe_tp
        shapes["mlp.fc"] = (experts, 2 * inter, a.hidden_size)
        shapes["mlp.proj"] = (experts, a.hidden_size, inter)
    else:
        inter = a.intermediate_size // tp
        shapes["mlp.fc"] = (inter, a.hidden_size)
        shapes["mlp.gate"] = (inter, a.hidden_size)
        shapes["mlp.proj"] = (a.hidden_size, inter)
    return shapes


def check_rank(path: Path, rank: int, exp: Expected, rep: Report) -> None:
    header = safetensors_header(path)
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    rep.tensors += len(tensors)
    a, tp = exp.arch, exp.tp
    dt = ST_DTYPE[exp.dtype]
    pp_rank = rank // tp

    def need(name: str, shape: tuple[int, ...] | None, dtypes: tuple[str, ...]) -> None:
        info = tensors.get(name)
        if info is None:
            rep.problems.append(f"{path.name}: missing {name}")
            return
        if shape is not None and tuple(info["shape"]) != shape:
            rep.problems.append(f"{path.name}: {name} has shape {tuple(info['shape'])}, expected {shape}")
        if info["dtype"] not in dtypes:
            rep.problems.append(f"{path.name}: {name} is {info['dtype']}, expected {' or '.join(dtypes)}")

    vocab_rows = exp.vocab_padded // tp
    if pp_rank == 0:
        need("transformer.vocab_embedding.weight", (vocab_rows, a.hidden_size), (dt,))
    if pp_rank == exp.pp - 1:
        need("lm_head.weight", (vocab_rows, a.hidden_size), (dt,))
        need("transformer.ln_f.weight", (a.hidden_size,), (dt,))
    layers = sorted({int(m.group(1)) for k in tensors if (m := LAYER.match(k))})
    per_stage = a.num_hidden_layers // exp.pp
    rep.check(len(layers) == per_stage, f"{path.name}: {len(layers)} layers, expected {per_stage}")
    shapes = _linear_shapes(exp)
    fmt = exp.qformat
    for layer in layers:
        prefix = f"transformer.layers.{layer}."
        need(prefix + "input_layernorm.weight", (a.hidden_size,), (dt,))
        need(prefix + "post_layernorm.weight", (a.hidden_size,), (dt,))
        if a.qk_norm:
            need(prefix + "attention.q_layernorm.weight", (a.head_dim,), (dt,))
            need(prefix + "attention.k_layernorm.weight", (a.head_dim,), (dt,))
        if a.is_moe:
            need(prefix + "mlp.router.weight", (a.num_local_experts, a.hidden_size), (dt, "F32"))
        for name, logical in shapes.items():
            w = prefix + name + ".weight"
            lead, (out, inp) = logical[:-2], logical[-2:]
            if fmt == "fp8":
                need(w, logical, ("F8_E4M3",))
                need(prefix + name + ".weights_scaling_factor", (*lead, 1) if lead else (1,), ("F32",))
            elif fmt in PACKED_INT4:
                need(w, (*lead, out // 2, inp), ("I8",))
                need(
                    prefix + name + ".weights_scaling_factor",
                    (*lead, out, inp // AWQ_GROUP_SIZE),
                    ("F32", dt),
                )
            elif fmt == "int8_sq":
                need(w, logical, ("I8",))
            else:  # full_prec and the weight-only formats (quantised by trtllm-build)
                need(w, logical, (dt,))
        if exp.kv_cache_dtype != "auto":
            need(prefix + "attention.kv_cache_scaling_factor", None, ("F32",))


def validate_export(out_dir: Path, exp: Expected) -> Report:
    rep = Report()
    try:
        cfg = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        rep.problems.append(f"config.json unreadable: {exc}")
        return rep
    check_config(cfg, exp, rep)
    world = exp.tp * exp.pp
    for rank in range(world):
        path = out_dir / f"rank{rank}.safetensors"
        if not path.is_file():
            rep.problems.append(f"rank{rank}.safetensors is missing")
            continue
        check_rank(path, rank, exp, rep)
    extra = sorted(p.name for p in out_dir.glob("rank*.safetensors") if int(p.stem[4:]) >= world)
    rep.check(not extra, f"unexpected shards {extra}")
    return rep


def raise_if_invalid(rep: Report, out_dir: Path) -> None:
    if rep.problems:
        first = rep.problems[0]
        more = f" (+{len(rep.problems) - 1} more, see the stage log)" if len(rep.problems) > 1 else ""
        raise StageFailed(
            f"the exported checkpoint in {out_dir} does not match the HF config: {first}{more}",
            "this is a conversion bug: check the transformers/modelopt versions (pip install 'swallow-trt[quantize]')",
        )
