"""AIPerf 0.13 and ``swallow-trt profile --api openai`` side by side on the same OpenAI-compatible API.

AIPerf pins its own fastapi and transformers 5.x (about 1.2 GB of packages), so it lives in a virtual
environment of its own, never the project's: ``--venv`` (default ``$SWALLOW_TRT_HOME/aiperf-0.13``) is
created and ``aiperf==0.13.*`` installed there on first use, then reused.

The server: a real Triton server whose ``tensorrt_llm`` is the test-only schedule model
(tests/triton_models/schedule: the first token ``--first-token-ms`` after the request arrives, then one
every ``--token-interval-ms``, exactly the requested count), behind ``swallow-trt openai``. A fixed
schedule rather than the CPU reference backend: the two tools then measure the same thing (the
schedule plus the API's and the client's own path), and neither the tiny model's compute nor the
other tool's CPU on this shared machine moves the figures much.

For each concurrency, one after the other on the same server: AIPerf (``--endpoint-type chat
--streaming --use-server-token-count``, synthetic prompts of ``--isl`` tokens by the repository's own
tokenizer directory, ``--osl`` output tokens forced with the API's ``min_tokens`` and ``ignore_eos``,
temperature 0), then ``swallow-trt profile --api openai`` with the same request count, the same output
length and the same prompt length as the server counts it (the rendered chat prompt: AIPerf's ISL is
the user message, the API adds the chat format's tokens; the profiler is given what the API reported to
AIPerf in ``usage.prompt_tokens``). Printed: TTFT p50 and TPOT p50 of both and their ratio (goal: within
5%), and each tool's counts. AIPerf calls TPOT "inter-token latency": (E2E - TTFT) / (output tokens - 1),
the profiler's TPOT definition.

    python benchmarks/aiperf_side_by_side.py [--concurrency 1 8] [--requests 64] [--isl 128] [--osl 64]
        [--venv DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

AIPERF = "aiperf==0.13.*"
GOAL = 0.05


def ensure_aiperf(venv: Path) -> Path:
    """``venv/bin/aiperf``, creating the environment and installing AIPerf 0.13 there if needed."""
    exe = venv / "bin" / "aiperf"
    python = venv / "bin" / "python"
    if exe.is_file():
        probe = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('aiperf'))"],
                               capture_output=True, text=True, check=False)  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip().startswith("0.13."):
            return exe
    print(f"installing {AIPERF} into {venv} (its own environment; about 1.2 GB)", flush=True)
    # The base interpreter, not this venv's: the new environment must not see the project's packages.
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", AIPERF], check=True)
    return exe


def aiperf_env() -> dict[str, str]:
    env = dict(os.environ)
    # HF_HUB_OFFLINE breaks AIPerf's loading of a local tokenizer path; the path needs no network anyway.
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def run_aiperf(exe: Path, api_url: str, model: str, tokenizer: Path, args: argparse.Namespace, concurrency: int,
               out: Path) -> dict[str, Any]:  # fmt: skip
    extra = json.dumps({"min_tokens": args.osl, "ignore_eos": True, "temperature": 0})
    argv = [
        str(exe), "profile", "--model", model, "--url", api_url, "--endpoint-type", "chat", "--streaming",
        "--tokenizer", str(tokenizer), "--use-server-token-count",
        "--isl", str(args.isl), "--isl-stddev", "0", "--osl", str(args.osl), "--osl-stddev", "0",
        "--extra-inputs", extra, "--concurrency", str(concurrency), "--request-count", str(args.requests),
        "--warmup-request-count", str(args.warmup), "--random-seed", "0", "--artifact-dir", str(out),
        "--ui-type", "none", "--no-server-metrics", "--no-gpu-telemetry",
    ]  # fmt: skip
    print("$ " + " ".join(argv), flush=True)
    proc = subprocess.run(argv, env=aiperf_env(), capture_output=True, text=True, check=False)
    (out / "aiperf.log").parent.mkdir(parents=True, exist_ok=True)
    (out / "aiperf.log").write_text(proc.stdout + proc.stderr)
    export = out / "profile_export_aiperf.json"  # the profiling phase's summary (phases/ holds each phase's)
    if proc.returncode != 0 or not export.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise SystemExit(f"aiperf failed (exit {proc.returncode}); its log: {out / 'aiperf.log'}\n{tail}")
    data: dict[str, Any] = json.loads(export.read_text())
    return data


def _metric(data: dict[str, Any], *names: str) -> dict[str, Any]:
    """One of AIPerf's metrics by its tag (the export holds them at the top level or under records)."""
    for where in (data, data.get("records", {})):
        for name in names:
            if isinstance(where, dict) and isinstance(where.get(name), dict):
                metric: dict[str, Any] = where[name]
                return metric
    raise KeyError(f"none of {names} in AIPerf's export (keys: {sorted(data)[:30]})")


def run_profiler(api_url: str, repo: Path, input_tokens: int, args: argparse.Namespace, concurrency: int,
                 out: Path) -> dict[str, Any]:  # fmt: skip
    from swallow_trt.profiler.run import ProfileSpec, run_profile

    spec = ProfileSpec(api="openai", url=api_url, model="", repo=repo, mode="closed", levels=(float(concurrency),),
                       input_tokens=input_tokens, output_tokens=args.osl, num_requests=args.requests,
                       warmup=args.warmup, out=out, plots=False)  # fmt: skip
    argv = (f"swallow-trt profile --api openai --url {api_url} --repo {repo} --concurrency {concurrency} "
            f"--input-tokens {input_tokens} --output-tokens {args.osl} --num-requests {args.requests} "
            f"--warmup {args.warmup} --no-plots --out {out}")  # fmt: skip
    print("$ " + argv, flush=True)
    (point,) = run_profile(spec).points
    summary: dict[str, Any] = point.summary
    return summary


def main() -> int:
    from swallow_trt.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--requests", type=int, default=64, help="measured requests per concurrency, each tool")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--isl", type=int, default=128, help="AIPerf's prompt tokens (the user message)")
    ap.add_argument("--osl", type=int, default=64, help="output tokens, forced")
    ap.add_argument("--first-token-ms", type=float, default=50.0)
    ap.add_argument("--token-interval-ms", type=float, default=10.0)
    ap.add_argument(
        "--venv",
        type=Path,
        default=None,
        help="AIPerf's environment (default: $SWALLOW_TRT_HOME/aiperf-0.13)",
    )
    ap.add_argument("--keep", type=Path, default=None, help="keep AIPerf's and the profiler's files here")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()

    exe = ensure_aiperf(args.venv or load_settings().home / "aiperf-0.13")
    version = subprocess.run([str(exe.parent / "python"), "-c", "import importlib.metadata as m; print(m.version('aiperf'))"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip

    from swallow_trt.openai_api.server import start_api_process
    from swallow_trt.triton_repo.ports import free_ports
    from swallow_trt.triton_repo.server import TritonServer
    from tests.fixtures.schedule_repo import schedule_repo

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aiperf-side-") as tmp:
        root = Path(tmp)
        files = args.keep or root / "runs"
        params = {
            "first_token_ms": str(args.first_token_ms),
            "token_interval_ms": str(args.token_interval_ms),
        }
        repo = schedule_repo(root, params, max_batch_size=max(64, max(args.concurrency)))
        tokenizer = repo / "chat" / "tokenizer"
        print(f"starting Triton (schedule model: first token {args.first_token_ms:g} ms, then every "
              f"{args.token_interval_ms:g} ms) and the OpenAI API", flush=True)  # fmt: skip
        server = TritonServer(repo, log_path=root / "server.log", start_timeout_s=1800).start()
        try:
            api = start_api_process(server.grpc_url, repo, port=free_ports("127.0.0.1", 1)[0], log_path=root / "api.log",
                                    max_in_flight=4 * max(args.concurrency))  # fmt: skip
            try:
                for c in args.concurrency:
                    started = time.monotonic()
                    a = run_aiperf(exe, api.url, repo.name, tokenizer, args, c, files / f"aiperf-c{c}")
                    isl = _metric(a, "input_sequence_length")
                    osl = _metric(a, "output_sequence_length")
                    # The profiler's --input-tokens is the rendered prompt, as the API counted AIPerf's.
                    server_isl = round(float(isl["avg"]))
                    p = run_profiler(api.url, repo, server_isl, args, c, files / f"profile-c{c}")
                    ttft_a = float(_metric(a, "time_to_first_token", "ttft")["p50"])
                    tpot_a = float(_metric(a, "inter_token_latency", "itl")["p50"])
                    row = {
                        "concurrency": c,
                        "aiperf": {"ttft_p50_ms": ttft_a, "tpot_p50_ms": tpot_a, "isl": isl, "osl": osl,
                                   "requests": _metric(a, "request_count").get("avg")},
                        "profiler": {"ttft_p50_ms": p["ttft_ms"]["p50"], "tpot_p50_ms": p["tpot_ms"]["p50"],
                                     "input_tokens": server_isl, "requests": p["requests"],
                                     "output_tokens_exact": p["output_tokens_exact"],
                                     "input_tokens_reported": p.get("input_tokens_reported")},
                        "ttft_ratio": p["ttft_ms"]["p50"] / ttft_a,
                        "tpot_ratio": p["tpot_ms"]["p50"] / tpot_a,
                        "seconds": time.monotonic() - started,
                    }  # fmt: skip
                    rows.append(row)
            finally:
                api.stop()
        finally:
            server.stop()
        if args.keep is None:
            shutil.rmtree(files, ignore_errors=True)

    machine = f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\n{machine}; AIPerf {version}; load average {os.getloadavg()[0]:.2f} at the end")
    print(f"schedule model: first token {args.first_token_ms:g} ms, then {args.token_interval_ms:g} ms/token; "
          f"AIPerf ISL {args.isl} (user message), OSL {args.osl}; {args.requests} requests per tool and point")  # fmt: skip
    print(f"{'conc':>4} | {'TTFT p50 AIPerf':>15} {'profiler':>9} {'ratio':>6} | {'TPOT p50 AIPerf':>15} "
          f"{'profiler':>9} {'ratio':>6} | counts")  # fmt: skip
    within = True
    for r in rows:
        a, p = r["aiperf"], r["profiler"]
        ok = abs(r["ttft_ratio"] - 1) <= GOAL and abs(r["tpot_ratio"] - 1) <= GOAL
        within &= ok
        print(f"{r['concurrency']:>4} | {a['ttft_p50_ms']:12.3f} ms {p['ttft_p50_ms']:9.3f} {r['ttft_ratio']:6.3f} | "
              f"{a['tpot_p50_ms']:12.3f} ms {p['tpot_p50_ms']:9.3f} {r['tpot_ratio']:6.3f} | "
              f"AIPerf ISL {a['isl'].get('avg'):g} OSL {a['osl'].get('avg'):g}; profiler input {p['input_tokens']} "
              f"(API: {p['input_tokens_reported']}), {p['requests']['ok']}/{p['requests']['sent']} ok, "
              f"exact {p['output_tokens_exact']}")  # fmt: skip
    print(f"goal (TTFT and TPOT p50 within {GOAL:.0%}): {'met' if within else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "aiperf": version, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
