"""``swallow-trt targets``: the GPU target profiles."""

from __future__ import annotations

from swallow_trt.cli.options import JsonOpt
from swallow_trt.cli.output import emit_json, out, table

TARGETS_HELP = """List the GPU target profiles: GPUs, SM, formats, KV-cache dtype, build and runtime settings.

Examples:

  swallow-trt targets

  swallow-trt targets --json
"""


def targets(as_json: JsonOpt = False) -> None:
    from swallow_trt.profiles import all_targets
    from swallow_trt.schema import to_plain

    profiles = all_targets()
    if as_json:
        emit_json([to_plain(p) for p in profiles])
        return
    rows: list[list[str]] = []
    for p in profiles:
        b = p.build
        r = p.runtime
        fmts = ", ".join(f"{f}*" if f == p.formats.default else f for f in p.formats.supported)
        flags = ["paged KV"] + (["paged ctx FMHA"] if b.use_paged_context_fmha else [])
        flags += ["FP8 ctx FMHA"] if b.use_fp8_context_fmha else []
        runtime = f"kv {r.kv_cache_free_gpu_mem_fraction:g}, {r.batch_scheduler_policy}"
        runtime += ", chunked ctx" if r.enable_chunked_context else ""
        for i, g in enumerate(p.gpus):
            first = i == 0
            rows.append(
                [
                    p.name if first else "",
                    f"sm{p.sm}" if first else "",
                    f"{g.name} {g.memory_gib:g} GiB {g.bandwidth_tb_s:g} TB/s",
                    f"{p.gpu_count}/{p.tp}" if first else "",
                    fmts if first else "",
                    p.formats.kv_cache_dtype if first else "",
                    f"{b.max_batch_size}/{b.max_input_len}/{b.max_seq_len}/{b.max_num_tokens}"
                    if first
                    else "",
                    (", ".join(flags) + "; " + runtime) if first else "",
                ]
            )
    headers = [
        "target",
        "SM",
        "GPUs",
        "gpus/tp",
        "formats (* default)",
        "KV",
        "batch/in/seq/tokens",
        "engine; runtime",
    ]
    out(table(None, headers, rows))
