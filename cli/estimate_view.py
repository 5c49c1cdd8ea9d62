"""How ``plan`` shows the performance estimate and the SLO search (text and JSON)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from swallow_trt.cli.output import out, table

if TYPE_CHECKING:
    from swallow_trt.builders.estimate import Estimate
    from swallow_trt.builders.slo import SearchResult

MODES = {
    "max_throughput": "max throughput (every request queued at once, as trtllm-bench throughput)",
    "concurrency": "closed loop",
    "rate": "open loop (Poisson arrivals)",
}


def render_estimate(est: Estimate) -> None:
    e = est.to_json()
    load = ""
    if e["mode"] == "concurrency":
        load = f"{e['concurrency']:g} streams"
    elif e["mode"] == "rate":
        load = f"{e['rate']:g} requests/s, {e['concurrency']:.1f} in flight on average"
    out(f"estimate {e['isl']}/{e['osl']} tokens, {MODES[e['mode']]}{', ' + load if load else ''}, on "
        f"{e['gpus']} x {e['gpu']}")  # fmt: skip
    out(f"  TTFT {e['ttft_ms']:,.1f} ms   TPOT {e['tpot_ms']:,.2f} ms   "
        f"{e['output_tokens_per_s']:,.0f} output tok/s ({e['output_tokens_per_s_per_gpu']:,.0f} per GPU, "
        f"{e['output_tokens_per_s_per_user']:,.1f} per user)   {e['requests_per_s']:,.2f} requests/s")  # fmt: skip
    out(f"  max_batch_size {e['max_batch_size']} (in the commands below); {e['sequences_fit']:,} sequences of "
        f"{e['isl'] + e['osl']} tokens fit the KV cache" + ("; saturated: the step's token budget limits it" if e["saturated"] else ""))  # fmt: skip
    terms = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in e["step_ms"].items() if v >= 0.005)
    out(f"  one step (ms, one stage): {terms}")
    f = e["floors"]
    out(f"  floors (datasheet peaks, no overheads): decode step at batch 1 {f['decode_step_batch1_ms']:.2f} ms, "
        f"prefill {f['prefill_ms']:.2f} ms, weights read once {f['weights_read_once_ms']:.2f} ms")  # fmt: skip
    for note in e["notes"]:
        out(f"  note: {note}")
    out(
        "  model: swallow_trt.perf (factors in swallow_trt/data/perf_factors.json; accuracy in BENCHMARKS.md)"
    )
    out()


def search_json(s: SearchResult) -> dict[str, Any]:
    return {"search": s.to_json()}


def render_search(s: SearchResult, shown: int = 5) -> None:
    w = s.workload
    load = f", {w.rate:g} requests/s" if w.rate is not None else ""
    out(f"SLO search: {w.isl}/{w.osl} tokens{load}, {s.slo.text()}, on {s.gpu_count} x {s.gpu} ({s.target}); "
        f"{s.layouts_fitting} layouts fit of {s.layouts_tried} tried, {s.seconds * 1e3:.0f} ms")  # fmt: skip
    rec = s.recommended
    if rec is not None:
        out(f"recommended: {rec.label()}, max_batch_size {rec.max_batch_size}")
    else:
        out("recommended: none")
    out(f"  why: {s.reason}")
    out()
    rows = []
    for c in s.candidates[:shown]:
        rows.append([
            c.qformat, c.kv_cache_dtype, f"{c.tp}x{c.pp}", str(c.replicas), str(c.max_batch_size),
            f"{c.point.ttft_s * 1e3:,.0f}", f"{c.point.tpot_s * 1e3:,.1f}", f"{c.tokens_per_s_per_gpu:,.0f}",
            "yes" if c.meets_slo else f"no (+{c.excess:.0%})",
        ])  # fmt: skip
    headers = ["format", "KV", "TPxPP", "replicas", "batch", "TTFT ms", "TPOT ms", "tok/s/GPU", "meets SLO"]
    out(table(None, headers, rows, right={3, 4, 5, 6, 7}))
    best = rec or s.nearest_miss
    if best is not None and best.commands:
        out()
        out(f"commands for {best.label()}:")
        for stage, argv in best.commands.items():
            from swallow_trt.builders.plan import command_line

            out(f"  # {stage}")
            out("  " + command_line(argv))
