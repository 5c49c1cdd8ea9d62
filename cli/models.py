"""``swallow-trt models``: the Swallow registry."""

from __future__ import annotations

from typing import Annotated

import typer

from swallow_trt.cli.options import JsonOpt
from swallow_trt.cli.output import emit_json, guarded, out, table

MODELS_HELP = """List every Swallow release in the registry, with aliases, architecture, chat format and licence.

Confidence marks: V = read from config.json/card, C = stated on a card, I = inherited from the base
model (unverified), U = unverified. A checkpoint's own config.json always wins at build time.

Examples:

  swallow-trt models

  swallow-trt models --family llama-3.1-swallow

  swallow-trt models --json | jq '.[].repo'
"""


@guarded
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
        "licence",
        "confidence",
    ]
    out(table(None, headers, rows_out, right={4, 5, 6}))
    out()
    out("aliases: " + ", ".join(f"{k} -> {v}" for k, v in reg.data.aliases.items()))
    out(
        "confidence: V read from config/card, C stated on a card, I inherited from the base model, U unverified"
    )
