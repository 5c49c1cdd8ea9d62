"""How much the profiler's client can ingest on this machine before its own measurement error exceeds 1 ms.

A real Triton server runs the test-only schedule model (tests/triton_models/schedule) with zero delays: it
streams every token of a request as fast as the Python backend can send, one token per response, and
stamps each response with its send time (CLOCK_MONOTONIC, shared by every process on the host). The
profiler (``swallow_trt.profiler.run``, closed loop, its own client processes) times each
response in its callback, so ``callback - model send`` is the response path plus any time the response
waited for the client. Its median at concurrency 1 is the baseline; the **measurement error** at a load is
the p90 of that lag minus the baseline. Two sweeps over the concurrency:

- ``tokens``: ``--tokens`` output tokens per request: streamed tokens/s (= responses/s) ingested;
- ``requests``: one output token per request: requests/s ingested.

The capacity is the best throughput reached before the error first exceeds 1 ms. On a 2-core machine the server shares the
cores with the client, so the figure is a lower bound for the client alone: the client's CPU share, its
CPU time per response (all its threads, gRPC's included) and its callback thread's busy share are printed
beside it.

The ``openai`` route (``--routes``): the same tokens sweep through ``swallow-trt openai`` in front of the
same model (``swallow-trt profile --api openai``: HTTP/1.1 + SSE, asyncio). The API stamps no send times,
so there the client is held to the API instead: the client's CPU per SSE event against the API
process's CPU per streamed token (its ``/metrics``: ``process_cpu_seconds_total`` over
``swallow_api_completion_tokens_total``), and its event loop's busy share. The client is not the
bottleneck while it costs well under what the API costs per token and its loop stays mostly idle; the
capacity there is the best throughput with every count exact, no failure and the loop under 50% busy.

    python benchmarks/client_capacity.py [--levels 1,2,4,8,16,32,64] [--duration 2] [--tokens 128]
        [--routes tensorrt_llm openai] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ERROR_BUDGET_MS = 1.0
BUSY_BUDGET = 0.5


def _repo(root: Path, batch: int) -> Path:
    """The shipped repository with the zero-delay schedule model as its ``tensorrt_llm`` (the API needs the
    rest: the chat model's parameters, the tokenizer)."""
    from tests.fixtures.schedule_repo import schedule_repo

    return schedule_repo(root, {"first_token_ms": "0", "token_interval_ms": "0"}, max_batch_size=batch)


def _api_counters(url: str) -> tuple[float, float]:
    """The API process's CPU seconds and streamed tokens so far, from its own /metrics."""
    import re
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(url + "/metrics", timeout=30).read().decode()
    cpu = re.search(r"^process_cpu_seconds_total (\S+)$", text, re.M)
    tok = re.search(r"^swallow_api_completion_tokens_total (\S+)$", text, re.M)
    return (float(cpu.group(1)) if cpu else float("nan"), float(tok.group(1)) if tok else float("nan"))


def _sweep(url: str, tokenizer: Path, out: Path, levels: tuple[float, ...], tokens: int, duration: float,
           workers: int | None, api_repo: Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One sweep; ``api_repo``: through the OpenAI API at ``url`` (serving that repository) instead."""
    from swallow_trt.profiler.perf_report import stats
    from swallow_trt.profiler.run import ProfileSpec, run_profile

    rows: list[dict[str, Any]] = []
    baseline = None
    points = []
    for level in levels:  # one point per run, so the API's counters can be read around each
        spec = ProfileSpec(
            url=url, model="tensorrt_llm" if api_repo is None else "", mode="closed", levels=(level,),
            input_tokens=32 if api_repo is None else 64, output_tokens=tokens, dataset="synthetic" if api_repo is None else "ja",
            duration_s=duration, warmup=16, out=out / f"c{int(level)}", tokenizer=tokenizer, plots=False, workers=workers,
            api="triton" if api_repo is None else "openai", repo=api_repo,
        )  # fmt: skip
        before = _api_counters(url) if api_repo is not None else None
        (p,) = run_profile(spec).points
        after = _api_counters(url) if api_repo is not None else None
        points.append((p, before, after))
    for p, before, after in points:
        lags = [
            (c - s) / 1e6 for r in p.requests for c, s in zip(r.rec.chunk_ns, r.rec.server_ns, strict=False)
        ]
        lag = stats(lags)
        if lags:
            baseline = lag["p50"] if baseline is None else baseline
        s, client = p.summary, p.summary["client"]
        api_us = None
        if before is not None and after is not None:
            api_us = (after[0] - before[0]) / max(after[1] - before[1], 1) * 1e6
        rows.append({
            "concurrency": int(p.level),
            "requests_per_s": s["requests_per_s"],
            "tokens_per_s": s["output_tokens_per_s"],
            "responses_per_s": client["responses"] / s["window_s"],
            "lag_ms": {k: lag[k] for k in ("p50", "p90", "p99")},
            "error_ms": lag["p90"] - baseline if lags and baseline is not None else None,
            "api_cpu_us_per_token": api_us,
            "client_processes": client["processes"],
            "client_cpu_share": client["cpu_share_of_machine"],
            "callback_busy_max": client["callback_busy_max"],
            "client_cpu_us_per_response": client["cpu_s"] / max(client["responses"], 1) * 1e6,
            "failed": s["requests"]["failed"],
            "exact": s["output_tokens_exact"],
        })  # fmt: skip
    return rows


def _capacity(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The best load point before the first one whose error exceeds the budget (or that failed); without
    a measured error (the openai route), before the client's loop is busier than BUSY_BUDGET."""
    best = None
    for r in rows:  # ascending concurrency
        over = (
            r["error_ms"] > ERROR_BUDGET_MS
            if r["error_ms"] is not None
            else r["callback_busy_max"] > BUSY_BUDGET
        )
        if over or r["failed"] or not r["exact"]:
            break
        if best is None or r[key] > best[key]:
            best = r
    return None if best is None else {"concurrency": best["concurrency"], key: best[key]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,2,4,8,16,32,64")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per load point")
    ap.add_argument("--tokens", type=int, default=128, help="output tokens per request in the tokens sweep")
    ap.add_argument("--workers", type=int, default=None, help="client processes (default: the profiler's)")
    ap.add_argument(
        "--routes", nargs="+", choices=["tensorrt_llm", "openai"], default=["tensorrt_llm", "openai"]
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from swallow_trt.openai_api.server import start_api_process
    from swallow_trt.triton_repo.ports import free_ports
    from swallow_trt.triton_repo.server import TritonServer

    levels = tuple(float(x) for x in args.levels.split(","))
    sweeps: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="client-capacity-") as tmp:
        root = Path(tmp)
        repo = _repo(root, max(64, int(max(levels))))
        tokenizer = repo / "chat" / "tokenizer"
        # A cold start of the full repository on a loaded 2-core machine takes minutes: a long deadline.
        server = TritonServer(repo, log_path=root / "server.log", start_timeout_s=1800).start()
        try:
            if "tensorrt_llm" in args.routes:
                for name, tokens in (("tokens", args.tokens), ("requests", 1)):
                    sweeps[name] = _sweep(server.grpc_url, tokenizer, root / name, levels, tokens, args.duration,
                                          args.workers)  # fmt: skip
            if "openai" in args.routes:
                api = start_api_process(server.grpc_url, repo, port=free_ports("127.0.0.1", 1)[0], log_path=root / "api.log",
                                        max_in_flight=4 * int(max(levels)))  # fmt: skip
                try:
                    sweeps["openai"] = _sweep(api.url, tokenizer, root / "openai", levels, args.tokens, args.duration,
                                              args.workers, api_repo=repo)  # fmt: skip
                finally:
                    api.stop()
        finally:
            server.stop()

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "error_budget_ms": ERROR_BUDGET_MS,
        "sweeps": sweeps,
        "capacity": {
            name: _capacity(rows, "requests_per_s" if name == "requests" else "tokens_per_s")
            for name, rows in sweeps.items()
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['machine']}; error = p90(callback - model send) - its median at concurrency 1")
    for name, rows in sweeps.items():
        per = 1 if name == "requests" else args.tokens
        via = "the OpenAI API, SSE" if name == "openai" else "tensorrt_llm over gRPC"
        print(f"\n{name} sweep ({per} output tokens/request, 1 token/response, {via})")
        print(f"  {'conc':>4} {'req/s':>9} {'tok/s':>9} {'lag p50':>8} {'lag p90':>8} {'lag p99':>8} {'error':>7}"
              f" {'client CPU':>10} {'us/resp':>7} {'cb busy':>7} {'procs':>5} {'API us/tok':>10}")  # fmt: skip
        for r in rows:
            lag = r["lag_ms"]
            error = "-" if r["error_ms"] is None else f"{r['error_ms']:.3f}"
            api_us = "-" if r["api_cpu_us_per_token"] is None else f"{r['api_cpu_us_per_token']:.1f}"
            print(
                f"  {r['concurrency']:>4} {r['requests_per_s']:9,.1f} {r['tokens_per_s']:9,.0f} {lag['p50']:8.3f}"
                f" {lag['p90']:8.3f} {lag['p99']:8.3f} {error:>7} {r['client_cpu_share']:10.0%}"
                f" {r['client_cpu_us_per_response']:7.0f} {r['callback_busy_max']:7.0%} {r['client_processes']:5d}"
                f" {api_us:>10}" + ("" if r["exact"] and not r["failed"] else "  (failures or inexact counts)")
            )  # fmt: skip
    print()
    for name, cap in result["capacity"].items():
        key = "requests_per_s" if name == "requests" else "tokens_per_s"
        rule = f"loop busy <= {BUSY_BUDGET:.0%}" if name == "openai" else f"error <= {ERROR_BUDGET_MS:g} ms"
        what = (
            f"{cap[key]:,.0f} {key.removesuffix('_per_s')}/s (concurrency {cap['concurrency']})"
            if cap
            else "none"
        )
        print(f"capacity, {name} sweep, {rule}: {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
