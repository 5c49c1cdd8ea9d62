"""How a plan reads: the table and notes of ``plan``, its ``--json`` form; shown by ``plan`` and by
``build --dry-run``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from swallow_trt.cli.output import gib, ms, out, table

if TYPE_CHECKING:
    from swallow_trt.builders.plan import Plan


def plan_to_json(p: Plan) -> dict[str, Any]:
    from swallow_trt.builders.plan import command_line
    from swallow_trt.schema import to_plain

    m = p.model
    return {
        "model": {
            "spec": m.spec,
            "resolved": m.display_name,
            "source": m.source,
            "alias": m.alias,
            "registered": m.registered.repo if m.registered else None,
            "chat_format": m.registered.entry.chat_format if m.registered else None,
            "params": p.params,
            "arch": to_plain(m.arch),
        },
        "target": {"name": p.profile.name, "sm": p.profile.sm, "gpu_count": p.gpu_count},
        "runtime": p.runtime,
        "qformat": p.qformat,
        "kv_cache_dtype": p.kv_cache_dtype,
        "dtype": p.dtype,
        "tp": p.tp,
        "pp": p.pp,
        "moe_tp_size": p.moe_tp_size,
        "moe_ep_size": p.moe_ep_size,
        "max_batch_size": p.max_batch_size,
        "max_input_len": p.max_input_len,
        "max_seq_len": p.max_seq_len,
        "max_num_tokens": p.max_num_tokens,
        "engine_settings": p.settings.to_json(),
        "timing_cache": str(p.engine.timing_cache) if p.engine.timing_cache else None,
        "kv_bytes_per_token": p.kv_bytes_per_token,
        "kv_bytes_per_token_per_gpu": p.kv_bytes_per_token_per_gpu,
        "kv_window_bytes_per_sequence": p.kv_window_bytes_per_sequence,
        "gpus": [
            {
                "gpu": g.gpu.name,
                "memory_bytes": g.gpu.memory_bytes,
                "fits": g.fits,
                "weight_bytes": g.weight_bytes,
                "weight_read_bytes_per_step": g.weight_read_bytes,
                "activation_bytes": g.activation_bytes,
                "overhead_bytes": g.overhead_bytes,
                "kv_budget_bytes": g.kv_budget_bytes,
                "kv_tokens": g.kv_tokens,
                "kv_sequences": g.kv_sequences,
                "concurrent_sequences": g.concurrent_sequences,
                "kv_window_bytes_per_sequence": g.kv_window_bytes_per_sequence,
                "shortfall_bytes": g.shortfall_bytes,
                "decode_step_floor_s": g.decode_floor_s,
                "decode_step_floor_at_batch_s": g.decode_floor_batch_s,
                "prefill_floor_s": g.prefill_floor_s,
                "tokens_per_s_ceiling": g.tokens_per_s_ceiling,
                "tokens_per_s_single_stream_ceiling": g.tokens_per_s_single,
                "compute_tflops": g.compute_tflops,
            }
            for g in p.gpus
        ],
        "host": {
            "hf_checkpoint_bytes": p.host.hf_checkpoint_bytes,
            "trtllm_checkpoint_bytes": p.host.trtllm_checkpoint_bytes,
            "engine_bytes": p.host.engine_bytes,
            "disk_bytes": p.host.disk_bytes,
            "quantize_ram_bytes": p.host.ram_bytes,
            "host_ram_bytes": p.host.host_ram_bytes,
            "ram_ok": p.host.ram_ok,
        },
        "commands": {k: {"argv": v, "line": command_line(v)} for k, v in p.commands.items()},
        "notes": p.notes,
    }


def render(p: Plan) -> None:
    from swallow_trt.builders.plan import command_line

    m = p.model
    a = m.arch
    via = f" (alias {m.alias})" if m.alias else (" (local checkpoint)" if m.source == "local" else "")
    out(f"model    {m.display_name}{via}")
    out(f"         {p.params / 1e9:.2f} B params, {a.num_hidden_layers} layers, {a.num_attention_heads} heads / "
        f"{a.num_key_value_heads} KV heads, vocab {a.vocab_size}, {a.max_position_embeddings} positions")  # fmt: skip
    moe = f", MoE tp {p.moe_tp_size} x ep {p.moe_ep_size}" if a.is_moe else ""
    out(f"target   {p.profile.name} (sm{p.profile.sm}, {p.gpu_count} GPU): {p.qformat} weights, "
        f"{p.kv_cache_dtype} KV cache, {p.dtype}, TP {p.tp} x PP {p.pp}{moe}, runtime {p.runtime}")  # fmt: skip
    out(f"shapes   max_batch_size {p.max_batch_size}, max_input_len {p.max_input_len}, "
        f"max_seq_len {p.max_seq_len}, max_num_tokens {p.max_num_tokens}")  # fmt: skip
    out(f"KV cache {p.kv_bytes_per_token:,} B per token (whole model), "
        f"{p.kv_bytes_per_token_per_gpu:,} B per token per GPU")  # fmt: skip
    if a.sliding_layers:
        out(f"         {a.num_hidden_layers - a.sliding_layers} full-attention layers above; the "
            f"{a.sliding_layers} sliding-window layers hold at most {a.sliding_window} tokens: "
            f"{p.kv_window_bytes_per_sequence:,} B per sequence")  # fmt: skip
    out()
    if p.runtime == "engine":
        render_engine_settings(p)
        out()
    rows: list[list[str]] = [
        ["fits", *("yes" if g.fits else f"NO, short {gib(g.shortfall_bytes)}" for g in p.gpus)],
        ["GPU memory", *(f"{g.gpu.memory_gib:g} GiB" for g in p.gpus)],
        ["weights", *(gib(g.weight_bytes) for g in p.gpus)],
        ["activations + runtime", *(gib(g.activation_bytes + g.overhead_bytes) for g in p.gpus)],
        ["KV budget", *(gib(g.kv_budget_bytes) for g in p.gpus)],
        ["KV tokens", *(f"{g.kv_tokens:,}" for g in p.gpus)],
        [f"sequences of {p.max_seq_len} tokens", *(f"{g.kv_sequences:,}" for g in p.gpus)],
        ["in flight (<= max_batch_size)", *(f"{g.concurrent_sequences:,}" for g in p.gpus)],
        [f"decode step floor, batch 1, ctx {p.max_input_len}", *(ms(g.decode_floor_s) for g in p.gpus)],
        [f"prefill floor, {p.max_input_len} tokens", *(ms(g.prefill_floor_s) for g in p.gpus)],
        ["single-stream ceiling", *(f"{g.tokens_per_s_single:,.0f} tok/s" for g in p.gpus)],
        ["throughput ceiling", *(f"{g.tokens_per_s_ceiling:,.0f} tok/s" for g in p.gpus)],
    ]
    headers = ["per GPU (fullest rank)", *(g.gpu.name for g in p.gpus)]
    out(table(None, headers, rows, right=set(range(1, len(headers)))))
    out()
    h = p.host
    ram = f"{gib(h.ram_bytes)} host RAM"
    if h.host_ram_bytes is not None:
        ram += f" (this host: {gib(h.host_ram_bytes)}{'' if h.ram_ok else ', NOT enough'})"
    out(f"quantize stage: {ram}")
    out(f"disk: {gib(h.disk_bytes)} = HF checkpoint {gib(h.hf_checkpoint_bytes)} + TRT-LLM checkpoint "
        f"{gib(h.trtllm_checkpoint_bytes)} + engine {gib(h.engine_bytes)}")  # fmt: skip
    out()
    if p.commands:
        out("commands:")
    for stage, argv in p.commands.items():
        out(f"  # {stage}")
        out("  " + command_line(argv))
    for note in p.notes:
        out(f"note: {note}")


SETTING_LABELS = {
    "kv_cache_dtype": "KV cache dtype",
    "context_fmha": "context FMHA",
    "use_paged_context_fmha": "paged context FMHA",
    "use_fp8_context_fmha": "FP8 context FMHA",
    "chunked_context": "chunked context",
    "max_num_tokens": "max_num_tokens",
}


def render_engine_settings(p: Plan) -> None:
    out("engine   what trtllm-build will build, and why:")
    for name, d in p.settings.to_json().items():
        value = d["value"]
        shown = ("on" if value else "off") if isinstance(value, bool) else str(value)
        out(f"  {SETTING_LABELS[name]:<19} {shown:<6} {d['reason']}")
    if p.engine.timing_cache is not None:
        out(f"  {'timing cache':<19} {p.engine.timing_cache.name} (one per GPU model and TensorRT version; "
            "build keys it by the GPU it detects and the TensorRT it finds)")  # fmt: skip
