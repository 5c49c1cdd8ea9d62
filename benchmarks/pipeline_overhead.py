"""The pipeline's own overhead: the ensemble and the streaming chat model against the LLM model called directly.

A real Triton server runs the repository ``swallow-trt repo`` writes (``tensorrt_llm``, ``preprocessing``,
``postprocessing``, ``ensemble``, ``chat``) for a tiny Llama-3.1-style tokenizer, with the ``tensorrt_llm``
model replaced by the test-only schedule model (tests/triton_models/schedule) at zero delays: it streams
exactly ``request_output_len`` tokens, one per response, as fast as the Python backend can send them. The
model costs nothing, so whatever a target adds to the direct call is the pipeline's own work:

- ``tensorrt_llm``: token ids in, token ids out (the baseline);
- ``ensemble`` (``stream`` true): tokenize (``preprocessing``), the LLM, detokenise per response
  (``postprocessing``), scheduled by Triton's ensemble;
- ``chat``: one decoupled BLS model: chat format, tokenize, the LLM, incremental detokenisation.

The load is the profiler's (``swallow_trt.profiler.run``: closed loop, its own client processes,
exact-length prompts, output length forced with ``min_tokens`` and no end token). Load points are
interleaved: at each concurrency the three targets run back to back, so the ratios come from the same
minute of a noisy machine, and the whole interleaved sweep is repeated ``--rounds`` times (each figure is
the median over the rounds; overheads are differences of those medians). Each round gets a fresh server,
and a point that fails (every request timed out after ``--request-timeout``) is recorded, the server
restarted and the round continued: Triton 2.51's CPU build has been seen to corrupt its heap
("malloc(): unaligned tcache chunk detected", then a wedged server) after several hundred ensemble
requests at concurrency 64; the count of such messages in the server logs is printed. Reported per target and concurrency: end-to-end latency (mean, p50), TTFT
(p50), TPOT (mean), output tokens/s; and the overhead against ``tensorrt_llm`` at the same concurrency:
per request (mean latency difference), per token (mean TPOT difference, and the machine time per output
token, 1/throughput: the cost that counts at saturation) and the ratios of latency and throughput. And the
CPU time (from /proc) that the target's own Python stubs, and the whole server (its process and every
stub), used per output token during the point: unlike throughput, it barely moves with the machine's
other load, so it is the figure to compare two chat models by.

    python benchmarks/pipeline_overhead.py [--levels 1,16,64] [--input-tokens 64] [--output-tokens 64]
        [--num-requests N] [--rounds 2] [--chat-variant NAME=FILE] [--json]

``--chat-variant before=/tmp/chat_before.py`` (with ``git show HEAD:triton_repo/models/chat/model.py >
/tmp/chat_before.py``) serves another chat model.py beside ``chat`` on the same server and runs it
right after ``chat`` at each concurrency: a before/after comparison from the same minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("tensorrt_llm", "ensemble", "chat")
BASELINE = "tensorrt_llm"
SCHEDULE = {"first_token_ms": "0", "token_interval_ms": "0", "tokens_per_response": "1"}


def _repo(root: Path, variants: dict[str, Path]) -> Path:
    from swallow_trt.triton_repo.configs import from_pbtxt, to_pbtxt
    from tests.fixtures.schedule_repo import schedule_repo

    repo = schedule_repo(root, SCHEDULE)
    for name, model_py in variants.items():
        # The chat model's directory (its tokenizer, its config under its own name) with another model.py.
        shutil.copytree(repo / "chat", repo / name, symlinks=True)
        shutil.copyfile(model_py, repo / name / "1" / "model.py")
        config = from_pbtxt((repo / name / "config.pbtxt").read_text(encoding="utf-8"))
        config.name = name
        (repo / name / "config.pbtxt").write_text(to_pbtxt(config), encoding="utf-8")
    return repo


def _variants(ap: argparse.ArgumentParser, specs: list[str]) -> dict[str, Path]:
    variants: dict[str, Path] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or name in TARGETS:
            ap.error(f"--chat-variant {spec!r}: want NAME=FILE, NAME a new model name (letters, digits, _)")
        if name in variants:
            ap.error(f"--chat-variant {name!r} given twice")
        if not Path(file).is_file():
            ap.error(f"--chat-variant {spec!r}: {file} is not a file")
        variants[name] = Path(file).absolute()
    return variants


def _cpu_s(server: Any) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the server process itself ("tritonserver") and by each
    model's Python stubs, keyed by model: the stubs are the server's own (``TritonServer.stubs``, found
    by its shared-memory prefix), so another server's do not count."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu: dict[str, float] = {}
    for pid, key in [(server.pid, "tritonserver"), *((s.pid, s.model) for s in server.stubs())]:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
        except OSError:  # gone since it was listed
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # from field 3 (state): utime, stime are 14, 15
        cpu[key] = cpu.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return cpu


def _point(
    url: str, model: str, level: int, args: argparse.Namespace, out: Path, repo: Path, server: Any
) -> dict[str, Any]:
    from swallow_trt.profiler.run import ProfileSpec, run_profile

    spec = ProfileSpec(
        url=url, model=model, mode="closed", levels=(float(level),), input_tokens=args.input_tokens,
        output_tokens=args.output_tokens, dataset="ja", num_requests=args.num_requests, warmup=args.warmup,
        out=out, plots=False, workers=args.workers, request_timeout_s=args.request_timeout, repo=repo,
    )  # fmt: skip
    t, cpu = time.monotonic(), _cpu_s(server)
    (p,) = run_profile(spec).points
    used = {k: v - cpu.get(k, 0.0) for k, v in _cpu_s(server).items()}
    s = p.summary
    # Every request (the warm-up's too) streams exactly output_tokens: the CPU is spread over them all.
    tokens = (s["requests"]["ok"] + args.warmup) * args.output_tokens
    return {
        "target": model,
        "concurrency": level,
        "requests": s["requests"],
        "exact": s["output_tokens_exact"],
        "latency_ms": {k: s["latency_ms"][k] for k in ("mean", "p50", "p90")},
        "ttft_ms": {k: s["ttft_ms"][k] for k in ("mean", "p50", "p90")},
        "tpot_ms": {k: s["tpot_ms"][k] for k in ("mean", "p50", "p90")},
        "requests_per_s": s["requests_per_s"],
        "tokens_per_s": s["output_tokens_per_s"],
        "client_processes": s["client"]["processes"],
        "client_cpu_share": s["client"]["cpu_share_of_machine"],
        "client_warnings": s["client"]["warnings"],
        "wall_s": time.monotonic() - t,
        # The target's own stubs, and the whole server (its process and every model's stubs).
        "model_cpu_us_per_token": used.get(model, 0.0) / tokens * 1e6,
        "server_cpu_us_per_token": sum(used.values()) / tokens * 1e6,
    }


def _median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One target and concurrency over the rounds: the median of each figure."""
    med = statistics.median
    row = {k: runs[0][k] for k in ("target", "concurrency", "client_processes")}
    for key in ("latency_ms", "ttft_ms", "tpot_ms"):
        row[key] = {k: med(r[key][k] for r in runs) for k in runs[0][key]}
    for key in ("requests_per_s", "tokens_per_s", "client_cpu_share", "wall_s", "model_cpu_us_per_token",
                "server_cpu_us_per_token"):  # fmt: skip
        row[key] = med(r[key] for r in runs)
    row["requests"] = {k: sum(r["requests"][k] for r in runs) for k in runs[0]["requests"]}
    row["exact"] = all(r["exact"] for r in runs)
    row["client_warnings"] = sorted({w for r in runs for w in r["client_warnings"]})
    row["rounds"] = runs
    return row


def _overhead(row: dict[str, Any], base: dict[str, Any], output_tokens: int) -> dict[str, float]:
    lat, base_lat = row["latency_ms"]["mean"], base["latency_ms"]["mean"]
    return {
        "per_request_ms": lat - base_lat,
        "per_token_tpot_us": (row["tpot_ms"]["mean"] - base["tpot_ms"]["mean"]) * 1e3,
        "per_token_latency_us": (lat - base_lat) / output_tokens * 1e3,  # the request's overhead, spread
        # Machine time per output token (the reciprocal of throughput): the cost at saturation.
        "per_token_machine_us": 1e6 / row["tokens_per_s"] - 1e6 / base["tokens_per_s"],
        "ttft_p50_ms": row["ttft_ms"]["p50"] - base["ttft_ms"]["p50"],
        "latency_ratio": lat / base_lat if base_lat else math.nan,
        "throughput_ratio": row["tokens_per_s"] / base["tokens_per_s"] if base["tokens_per_s"] else math.nan,
    }


def _ab(rows: list[dict[str, Any]], variants: dict[str, Path]) -> list[dict[str, Any]]:
    """``chat`` against each variant at each concurrency: their overheads over tensorrt_llm side by side."""
    found = {(r["target"], r["concurrency"]): r for r in rows if r["overhead"]}
    out = []
    for name in variants:
        for (target, level), chat in found.items():
            other = found.get((name, level))
            if target != "chat" or other is None:
                continue
            out.append({
                "variant": name, "concurrency": level,
                "machine_us_per_token": {"chat": chat["overhead"]["per_token_machine_us"],
                                         name: other["overhead"]["per_token_machine_us"]},
                "ttft_p50_ms": {"chat": chat["ttft_ms"]["p50"], name: other["ttft_ms"]["p50"]},
                "tokens_per_s": {"chat": chat["tokens_per_s"], name: other["tokens_per_s"]},
                "model_cpu_us_per_token": {"chat": chat["model_cpu_us_per_token"],
                                           name: other["model_cpu_us_per_token"]},
                "server_cpu_us_per_token": {"chat": chat["server_cpu_us_per_token"],
                                            name: other["server_cpu_us_per_token"]},
            })  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,16,64", help="concurrencies (closed loop)")
    ap.add_argument("--input-tokens", type=int, default=64)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument(
        "--num-requests",
        type=int,
        default=None,
        help="per load point (default: the profiler's, max(32, 4 x c))",
    )
    ap.add_argument("--rounds", type=int, default=2, help="interleaved sweeps; each figure is their median")
    ap.add_argument("--warmup", type=int, default=8, help="warm-up requests before each load point")
    ap.add_argument("--workers", type=int, default=None, help="client processes (default: the profiler's)")
    ap.add_argument(
        "--request-timeout", type=float, default=60.0, help="seconds before a request counts as failed"
    )
    ap.add_argument(
        "--start-timeout", type=float, default=600.0, help="seconds a server may take to become ready"
    )
    ap.add_argument(
        "--server-arg", action="append", default=[], help="extra tritonserver argument (repeatable)"
    )
    ap.add_argument("--targets", default=",".join(TARGETS), help="tensorrt_llm (always run), ensemble, chat")
    ap.add_argument(
        "--chat-variant",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="also serve FILE (another chat model.py, e.g. an earlier commit's) as model NAME with chat's"
        " config, and run it after the other targets at each concurrency: an A/B on one server (repeatable)",
    )
    ap.add_argument(
        "--keep", type=Path, default=None, help="write the repository and server log here and keep them"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    variants = _variants(ap, args.chat_variant)
    sys.path.insert(0, str(ROOT))
    from swallow_trt.errors import EnvironmentProblem, StageFailed
    from swallow_trt.triton_repo.server import TritonServer

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr, flush=True)

    levels = [int(x) for x in args.levels.split(",")]
    started, load_before = time.monotonic(), os.getloadavg()[0]
    targets = [BASELINE, *(t for t in args.targets.split(",") if t in TARGETS and t != BASELINE), *variants]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {(m, c): [] for c in levels for m in targets}
    failures: list[dict[str, Any]] = []
    logs: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="pipeline-overhead-") as tmp:
        root = Path(tmp) if args.keep is None else args.keep.absolute()
        root.mkdir(parents=True, exist_ok=True)
        repo = _repo(root, variants)
        for n in range(args.rounds):  # a fresh server per round, and after any failed point
            todo = [(level, model) for level in levels for model in targets]  # interleaved per concurrency
            while todo:
                logs.append(root / f"server-{len(logs)}.log")
                server = TritonServer(
                    repo, log_path=logs[-1], extra_args=args.server_arg, start_timeout_s=args.start_timeout
                )
                try:
                    server.start()
                    while todo:
                        level, model = todo.pop(0)
                        try:
                            r = _point(
                                server.grpc_url,
                                model,
                                level,
                                args,
                                root / f"{model}-{level}-{n}",
                                repo,
                                server,
                            )
                        except (StageFailed, EnvironmentProblem) as exc:
                            failures.append({"round": n + 1, "target": model, "concurrency": level,
                                             "error": str(exc), "server_log": logs[-1].name})  # fmt: skip
                            say(f"  round {n + 1}: {model} at concurrency {level} FAILED ({exc}); restarting")
                            break
                        runs[model, level].append(r)
                        say(f"  round {n + 1}: {model} at concurrency {level}: {r['wall_s']:.1f} s")
                finally:
                    server.stop()
        heap_errors = sum(
            f.read_text(errors="replace").count("unaligned tcache chunk") for f in logs if f.is_file()
        )
    rows = [_median_row(v) for v in runs.values() if v]
    for r in rows:
        base = next(
            (b for b in rows if b["target"] == BASELINE and b["concurrency"] == r["concurrency"]), None
        )
        r["overhead"] = None if base is None or r is base else _overhead(r, base, args.output_tokens)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "input_tokens": args.input_tokens,
        "output_tokens": args.output_tokens,
        "rounds": args.rounds,
        "chat_variants": {name: str(path) for name, path in variants.items()},
        "servers_started": len(logs),
        "failures": failures,
        "server_heap_corruption_messages": heap_errors,
        "wall_s": time.monotonic() - started,
        "points": rows,
        "chat_vs_variants": _ab(rows, variants),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['machine']}; {args.input_tokens} input / {args.output_tokens} output tokens per request,"
        f" zero-delay LLM model; medians of {args.rounds} interleaved rounds; {result['wall_s']:.0f} s in all;"
        f" load average {load_before:.1f} before, {result['load_average_1min']['after']:.1f} after"
    )
    print(
        f"\n{'conc':>4} {'target':<12} {'lat mean':>9} {'lat p50':>9} {'TTFT p50':>9} {'TPOT':>8} {'tok/s':>7}"
        f" {'+/request':>10} {'+TPOT':>7} {'+1/tput':>7} {'+TTFT':>7} {'lat x':>6} {'tok/s x':>7}"
        f" {'CPU own':>7} {'CPU all':>7}"
    )
    print(
        f"{'':>4} {'':<12} {'ms':>9} {'ms':>9} {'ms':>9} {'ms':>8} {'':>7} {'ms':>10} {'us':>7} {'us':>7} {'ms':>7}"
        f" {'':>6} {'':>7} {'us':>7} {'us':>7}"
    )
    for r in rows:
        o = r["overhead"]
        extra = (
            f" {o['per_request_ms']:10.2f} {o['per_token_tpot_us']:7.0f} {o['per_token_machine_us']:7.0f}"
            f" {o['ttft_p50_ms']:7.2f} {o['latency_ratio']:5.2f}x {o['throughput_ratio']:6.2f}x"
            if o
            else f" {'-':>10} {'-':>7} {'-':>7} {'-':>7} {'1.00x':>6} {'1.00x':>7}"
        )
        flags = (
            f"  ({r['requests']['failed']} of {r['requests']['sent']} failed)"
            if r["requests"]["failed"]
            else ""
        )
        flags += "" if r["exact"] else "  (inexact token counts)"
        flags += "".join(f"  [{w}]" for w in r["client_warnings"])
        print(
            f"{r['concurrency']:>4} {r['target']:<12} {r['latency_ms']['mean']:9.2f} {r['latency_ms']['p50']:9.2f}"
            f" {r['ttft_ms']['p50']:9.2f} {r['tpot_ms']['mean']:8.3f} {r['tokens_per_s']:7,.0f}"
            + extra
            + f" {r['model_cpu_us_per_token']:7.0f} {r['server_cpu_us_per_token']:7.0f}"
            + flags
        )
    for ab in result["chat_vs_variants"]:
        name, us, ttft = ab["variant"], ab["machine_us_per_token"], ab["ttft_p50_ms"]
        own, all_ = ab["model_cpu_us_per_token"], ab["server_cpu_us_per_token"]
        print(
            f"chat vs {name} at concurrency {ab['concurrency']}: +machine time {us['chat']:.0f} vs {us[name]:.0f}"
            f" us/token, CPU own {own['chat']:.0f} vs {own[name]:.0f}, all {all_['chat']:.0f} vs {all_[name]:.0f}"
            f" us/token, TTFT p50 {ttft['chat']:.2f} vs {ttft[name]:.2f} ms"
        )
    for f in failures:
        print(f"FAILED: round {f['round']} {f['target']} at concurrency {f['concurrency']}: {f['error']}")
    if failures or heap_errors:
        print(
            f"{len(logs)} server(s) started; {heap_errors} 'unaligned tcache chunk' (heap corruption) messages"
            " in their logs"
        )
    print(
        "\nOverheads against tensorrt_llm at the same concurrency. +/request: mean E2E latency difference;"
        " +TPOT: mean TPOT difference (per token, in the stream); +1/tput: machine time per output token"
        " (1/throughput) difference; lat x: mean latency ratio; tok/s x: output throughput ratio; CPU own:"
        " CPU time of the target's own Python stubs per output token (warm-up included); CPU all: of the"
        " server process and every stub (the client's excluded)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
