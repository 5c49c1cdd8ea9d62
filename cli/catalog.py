"""``swallow-trt models`` and ``swallow-trt targets``."""

from __future__ import annotations

from typing import Annotated

import typer

from swallow_trt.cli.options import JsonOpt
from swallow_trt.cli.output import console, emit_json, guarded

MODELS_HELP = """List every Swallow release in the registry, with aliases, architecture, chat format and licence.

Confidence marks: V = read from config.json/card, C = stated on a card, I = inherited from the base
model (unverified), U = unverified. A checkpoint's own config.json always wins at build time.

Examples:

  swallow-trt models

  swallow-trt models --family llama-3.1-swallow

  swallow-trt models --json | jq '.[].repo'
"""

TARGETS_HELP = """List the GPU target profiles: GPUs, SM, formats, KV-cache dtype, build and runtime settings.

Examples:

  swallow-trt targets

  swallow-trt targets --json
"""


@guarded
def models(
    family: Annotated[str | None, typer.Option("--family", help="Only this family (e.g. swallow-ms).")] = None,
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
    from rich.table import Table

    table = Table(title="Swallow models", title_justify="left")
    for col in ("repo (tokyotech-llm/…)", "alias", "kind", "arch", "params", "vocab", "ctx", "chat", "licence", "conf."):
        table.add_column(col, overflow="fold")
    for m in rows:
        a = m.arch
        arch = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "MixtralForCausalLM": "mixtral"}[a.hf_class]
        arch += f" {'GQA' if a.num_key_value_heads < a.num_attention_heads else 'MHA'}"
        if a.is_moe:
            arch += f" {a.num_local_experts}e/top{a.num_experts_per_tok}"
        conf = " ".join(f"{k}:{v}" for k, v in m.entry.confidence.items())
        table.add_row(
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
        )
    con = console()
    con.print(table)
    con.print("aliases: " + ", ".join(f"{k} -> {v}" for k, v in reg.data.aliases.items()))


@guarded
def targets(as_json: JsonOpt = False) -> None:
    from swallow_trt.profiles import all_targets
    from swallow_trt.schema import to_plain

    profiles = all_targets()
    if as_json:
        emit_json([to_plain(p) for p in profiles])
        return
    from rich.table import Table

    table = Table(title="GPU targets", title_justify="left")
    for col in ("target", "SM", "GPUs", "count / tp", "formats (default)", "KV", "build (batch/in/seq/tokens)", "runtime"):
        table.add_column(col, overflow="fold")
    for p in profiles:
        gpus = "\n".join(f"{g.name} {g.memory_gib:g} GiB {g.bandwidth_tb_s:g} TB/s" for g in p.gpus)
        fmts = ", ".join(f"[b]{f}[/b]" if f == p.formats.default else f for f in p.formats.supported)
        b = p.build
        extras = ["paged KV", "paged ctx FMHA" if b.use_paged_context_fmha else "", "FP8 ctx FMHA" if b.use_fp8_context_fmha else ""]
        build = f"{b.max_batch_size}/{b.max_input_len}/{b.max_seq_len}/{b.max_num_tokens}\n" + ", ".join(e for e in extras if e)
        r = p.runtime
        runtime = f"kv {r.kv_cache_free_gpu_mem_fraction:g}, {r.batch_scheduler_policy}" + (
            ", chunked ctx" if r.enable_chunked_context else ""
        )
        table.add_row(p.name, str(p.sm), gpus, f"{p.gpu_count} / {p.tp}", fmts, p.formats.kv_cache_dtype, build, runtime)
    console().print(table)
