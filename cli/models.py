"""``swallow-trt models``: the Swallow registry."""

from __future__ import annotations

from typing import Annotated

import typer

from swallow_trt.cli.options import JsonOpt
from swallow_trt.cli.output import emit_json, out, table

MODELS_HELP = """List every Swallow release in the registry, with aliases, architecture, chat format, licence
and the runtimes each can use: engine (trtllm-build) and/or pytorch (TensorRT-LLM's LLM API; GPT-OSS
has no engine model). Status "refused" marks a repo that is listed but not built (the GPTQModel
AWQ-INT4 repos: quantize the BF16 RL model with --int4-awq), "private" one made private upstream.

Confidence marks: V = read from config.json/card, C = stated on a card, I = inherited from the base
model (unverified), U = unverified. A checkpoint's own config.json always wins at build time.

Examples:

  swallow-trt models

  swallow-trt models --family llama-3.1-swallow

  swallow-trt models --family qwen3_moe

  swallow-trt models --json | jq '.[].repo'
"""


def models(
    family: Annotated[
        str | None, typer.Option("--family", help="Only this family (e.g. swallow-ms).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    from swallow_trt.errors import UsageError
    from swallow_trt.registry import load_registry
    from swallow_trt.schema import to_plain

    reg = load_registry()
    rows = [m for m in reg.models if family is None or m.entry.family == family]
    if family is not None and not rows:
        raise UsageError(f"unknown family {family!r}", "families: " + ", ".join(reg.data.families))
    aliases = {v: k for k, v in reg.data.aliases.items()}
    if as_json:
        emit_json(
            [
                {
                    "repo": m.repo,
                    "alias": aliases.get(m.repo),
                    "family": m.entry.family,
                    "kind": m.entry.kind,
                    "size": m.entry.size,
                    "version": m.entry.version,
                    "released": m.entry.released,
                    "license": m.family.license,
                    "chat_format": m.entry.chat_format,
                    "stop_words": m.entry.stop_words,
                    "system_prompt": m.entry.system_prompt,
                    "bos_token_id": m.bos_token_id,
                    "eos_token_ids": m.eos_token_ids,
                    "params": m.arch.total_params,
                    "arch": to_plain(m.arch),
                    "confidence": dict(m.entry.confidence),
                    "notes": m.entry.notes,
                    "runtimes": m.runtimes,
                    "status": m.entry.status,
                    "use_instead": m.entry.use_instead,
                    "reasoning": m.family.reasoning,
                    "sampling": to_plain(m.family.sampling) if m.family.sampling else None,
                    "max_context": m.family.max_context,
                }
                for m in rows
            ]
        )
        return
    rows_out: list[list[str]] = []
    for m in rows:
        a = m.arch
        arch = {
            "LlamaForCausalLM": "llama",
            "MistralForCausalLM": "mistral",
            "MixtralForCausalLM": "mixtral",
            "Qwen3ForCausalLM": "qwen3",
            "Qwen3MoeForCausalLM": "qwen3-moe",
            "GptOssForCausalLM": "gpt-oss",
        }[a.hf_class]
        arch += f" {'GQA' if a.num_key_value_heads < a.num_attention_heads else 'MHA'}"
        if a.is_moe:
            arch += f" {a.num_local_experts}x top{a.num_experts_per_tok}"
        conf = " ".join(f"{k}:{v}" for k, v in m.entry.confidence.items())
        rows_out.append(
            [
                m.name,
                aliases.get(m.repo, ""),
                m.entry.kind,
                arch,
                f"{a.total_params / 1e9:.1f}B",
                str(a.vocab_size),
                str(a.max_position_embeddings),
                m.entry.chat_format,
                "+".join(m.runtimes),
                m.entry.status if m.entry.status != "available" else "",
                m.family.license,
                conf,
            ]
        )
    headers = [
        "model (tokyotech-llm/...)",
        "alias",
        "kind",
        "arch",
        "params",
        "vocab",
        "ctx",
        "chat",
        "runtime",
        "status",
        "licence",
        "confidence",
    ]
    out(table(None, headers, rows_out, right={4, 5, 6}))
    out()
    out("aliases: " + ", ".join(f"{k} -> {v}" for k, v in reg.data.aliases.items()))
    for fam_name, fam in reg.data.families.items():
        if fam.sampling is not None and any(m.entry.family == fam_name for m in rows):
            s = fam.sampling
            parts = [f"temperature {s.temperature:g}", f"top_p {s.top_p:g}"]
            parts += [f"top_k {s.top_k}"] if s.top_k is not None else []
            parts += [f"reasoning effort {s.reasoning_effort}"] if s.reasoning_effort else []
            cap = f"; context up to {fam.max_context}" if fam.max_context else ""
            out(f"{fam_name}: the card recommends " + ", ".join(parts) + cap)
    out(
        "confidence: V read from config/card, C stated on a card, I inherited from the base model, U unverified"
    )
