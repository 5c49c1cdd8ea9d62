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

    python benchmarks/client_capacity.py [--levels 1,2,4,8,16,32,64] [--duration 2] [--tokens 128] [--json]
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


def _repo(root: Path) -> Path:
    from tests.fixtures.schedule_model import add_schedule_model

    repo = root / "repo"
    add_schedule_model(repo, "tensorrt_llm", first_token_ms=0, token_interval_ms=0)
    return repo


def _sweep(url: str, tokenizer: Path, out: Path, levels: tuple[float, ...], tokens: int, duration: float,
           workers: int | None) -> list[dict[str, Any]]:  # fmt: skip
    from swallow_trt.profiler.perf_report import stats
    from swallow_trt.profiler.run import ProfileSpec, run_profile

    spec = ProfileSpec(
        url=url, model="tensorrt_llm", mode="closed", levels=levels, input_tokens=32, output_tokens=tokens,
        dataset="synthetic", duration_s=duration, warmup=16, out=out, tokenizer=tokenizer, plots=False,
        workers=workers,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    baseline = None
    for p in run_profile(spec).points:
        lags = [
            (c - s) / 1e6 for r in p.requests for c, s in zip(r.rec.chunk_ns, r.rec.server_ns, strict=False)
        ]
        lag = stats(lags)
        baseline = lag["p50"] if baseline is None else baseline
        s, client = p.summary, p.summary["client"]
        rows.append({
            "concurrency": int(p.level),
            "requests_per_s": s["requests_per_s"],
            "tokens_per_s": s["output_tokens_per_s"],
            "responses_per_s": client["responses"] / s["window_s"],
            "lag_ms": {k: lag[k] for k in ("p50", "p90", "p99")},
            "error_ms": lag["p90"] - baseline,
            "client_processes": client["processes"],
            "client_cpu_share": client["cpu_share_of_machine"],
            "callback_busy_max": client["callback_busy_max"],
            "client_cpu_us_per_response": client["cpu_s"] / max(client["responses"], 1) * 1e6,
            "failed": s["requests"]["failed"],
            "exact": s["output_tokens_exact"],
        })  # fmt: skip
    return rows


def _capacity(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The best load point before the first one whose error exceeds the budget (or that failed)."""
    best = None
    for r in rows:  # ascending concurrency
        if r["error_ms"] > ERROR_BUDGET_MS or r["failed"] or not r["exact"]:
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
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from swallow_trt.triton_repo.server import TritonServer
    from tests.fixtures.tiny import make_tokenizer

    levels = tuple(float(x) for x in args.levels.split(","))
    with tempfile.TemporaryDirectory(prefix="client-capacity-") as tmp:
        root = Path(tmp)
        make_tokenizer("llama31").save_pretrained(root / "tokenizer")
        with TritonServer(_repo(root), log_path=root / "server.log") as server:
            server.start(timeout_s=240)
            sweeps = {
                name: _sweep(server.grpc_url, root / "tokenizer", root / name, levels, tokens, args.duration, args.workers)
                for name, tokens in (("tokens", args.tokens), ("requests", 1))
            }  # fmt: skip
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "error_budget_ms": ERROR_BUDGET_MS,
        "sweeps": sweeps,
        "capacity": {
            "tokens_per_s": _capacity(sweeps["tokens"], "tokens_per_s"),
            "requests_per_s": _capacity(sweeps["requests"], "requests_per_s"),
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['machine']}; error = p90(callback - model send) - its median at concurrency 1")
    for name, rows in sweeps.items():
        print(
            f"\n{name} sweep ({args.tokens if name == 'tokens' else 1} output tokens/request, 1 token/response)"
        )
        print(f"  {'conc':>4} {'req/s':>9} {'tok/s':>9} {'lag p50':>8} {'lag p90':>8} {'lag p99':>8} {'error':>7}"
              f" {'client CPU':>10} {'us/resp':>7} {'cb busy':>7} {'procs':>5}")  # fmt: skip
        for r in rows:
            lag = r["lag_ms"]
            print(
                f"  {r['concurrency']:>4} {r['requests_per_s']:9,.1f} {r['tokens_per_s']:9,.0f} {lag['p50']:8.3f}"
                f" {lag['p90']:8.3f} {lag['p99']:8.3f} {r['error_ms']:7.3f} {r['client_cpu_share']:10.0%}"
                f" {r['client_cpu_us_per_response']:7.0f}"
                f" {r['callback_busy_max']:7.0%} {r['client_processes']:5d}"
                + ("" if r["exact"] and not r["failed"] else "  (failures or inexact counts)")
            )
    cap = result["capacity"]
    tok, req = cap["tokens_per_s"], cap["requests_per_s"]
    print(
        f"\ncapacity with error <= {ERROR_BUDGET_MS:g} ms: "
        + (
            f"{tok['tokens_per_s']:,.0f} streamed tokens/s (concurrency {tok['concurrency']})"
            if tok
            else "none"
        )
        + ", "
        + (f"{req['requests_per_s']:,.0f} requests/s (concurrency {req['concurrency']})" if req else "none")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
