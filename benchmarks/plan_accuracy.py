"""How far ``swallow-trt plan --isl/--osl`` is from measured and independently estimated figures (issue 16).

Runs ``plan --json`` (in-process, through the CLI) for every anchor below and prints the prediction
beside the anchor with their ratio and the tolerance the issue sets:

* max throughput, total output tok/s: TensorRT-LLM's own v0.17 engine figures (``trtllm-bench
  throughput``), NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md at 258c7540c035; +-25%;
* batch 1 (TTFT/TPOT) and concurrency 64 (TPOT, tok/s/GPU) at 1024/256: aiconfigurator 0.12's
  measured-kernel estimates as issue 16 quotes them; +-30%;
* the SLO search (70B on 4x H100, 1024/256, TTFT <= 500 ms, TPOT <= 30 ms);
* further public rows the factors were *not* fitted to alone (other ISL/OSL, TP2, H200, Mistral,
  Mixtral, online serving at a request rate): printed with the same ratio, "check" rows.

With ``--aiconfigurator`` it also creates ``.venv-aiconfigurator`` (aiconfigurator 0.12.0 and its numpy
>= 2.1 stay out of the project's environment) and prints aiconfigurator's live estimates for the same
cases side by side (its TensorRT-LLM data is 1.3.0rc20 on H100/L40S and 1.0.0 on A100: the PyTorch
runtime, an independent estimate, not the engine's truth).

    python benchmarks/plan_accuracy.py [--json] [--aiconfigurator]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AIC_VENV = ROOT / ".venv-aiconfigurator"
AIC_PINS = ["aiconfigurator==0.12.0", "aiconfigurator-core==0.12.0", "numpy>=2.1"]

H100 = ["--target", "hopper", "--gpu", "H100-SXM5-80GB", "--fp8"]
H200 = ["--target", "hopper", "--gpu", "H200-SXM-141GB", "--fp8"]
L40S = ["--target", "ada", "--gpu", "L40S", "--fp8"]
A100_FP16 = ["--target", "ampere", "--gpu", "A100-SXM4-80GB", "--qformat", "full_prec", "--dtype", "float16"]
A100_BF16 = ["--target", "ampere", "--gpu", "A100-SXM4-80GB", "--qformat", "full_prec", "--dtype", "bfloat16"]
H100X4 = ["--target", "h100x4", "--tp", "4", "--fp8"]
H100X2 = ["--target", "hopper", "--gpu", "H100-SXM5-80GB", "--gpus", "2", "--tp", "2", "--fp8"]
MS7B = "tokyotech-llm/Swallow-MS-7b-v0.1"
MX = "tokyotech-llm/Swallow-MX-8x7b-NVE-v0.1"
PERF = "perf-overview v0.17"
AIC = "aiconfigurator 0.12 (issue 16)"
AIC_RUN = "aiconfigurator 0.12 run here"
# aiconfigurator's figures per case, in this order: batch-1 TTFT and TPOT, concurrency-64 TPOT and tok/s/GPU.
AIC_METRICS = (("batch 1 TTFT", "ttft_ms", 1), ("batch 1 TPOT", "tpot_ms", 1), ("c64 TPOT", "tpot_ms", 64),
               ("c64 tok/s/GPU", "output_tokens_per_s_per_gpu", 64))  # fmt: skip
SERVING = "perf-overview v0.14 serving (BF16, Triton; includes Triton's overhead)"


@dataclass(frozen=True)
class Case:
    name: str
    args: list[str]
    isl: int
    osl: int
    metric: str  # key of plan's estimate
    anchor: float
    source: str
    tolerance: float | None  # None: a check row, printed but not an acceptance figure
    extra: tuple[str, ...] = ()
    aic: tuple[str, str, str, int, int] | None = None  # (hf model, system, quant, tp, batch)


def _tput(
    name: str, model: str, args: list[str], rows: list[tuple[int, int, float]], tol: float | None
) -> list[Case]:
    return [
        Case(f"{name} {i}/{o}", ["--model", model, *args], i, o, "output_tokens_per_s", v, PERF, tol)
        for i, o, v in rows
    ]


L8 = "meta-llama/Meta-Llama-3.1-8B"
L70 = "meta-llama/Meta-Llama-3.1-70B"
CASES: list[Case] = [
    # --- acceptance: max throughput vs TensorRT-LLM's v0.17 engines ---------------------------------
    *_tput(
        "8B TP1 H100 FP8",
        "8b",
        H100,
        [(128, 128, 28836.77), (1000, 1000, 15244.78), (2048, 2048, 9488.42)],
        0.25,
    ),
    *_tput("8B TP1 L40S FP8", "8b", L40S, [(128, 128, 9104.61), (1000, 1000, 4054.71)], 0.25),
    *_tput("8B TP1 A100 FP16", "8b", A100_FP16, [(128, 128, 6627.27), (1000, 1000, 3786.83)], 0.25),
    *_tput(
        "70B TP4 H100 FP8",
        "70b",
        H100X4,
        [(128, 128, 11127.53), (1000, 1000, 7430.99), (2048, 2048, 5480.03)],
        0.25,
    ),
    # --- acceptance: batch 1 and concurrency 64 at 1024/256 vs aiconfigurator ------------------------
    *[
        Case(
            f"{name} {label}",
            ["--model", model, *args],
            1024,
            256,
            metric,
            value,
            AIC,
            0.30,
            ("--concurrency", str(batch)),
            (*aic, batch),
        )
        for name, model, args, aic, figures in (
            ("8B H100 FP8", "8b", H100, (L8, "h100_sxm", "fp8", 1), (30.0, 4.19, 9.37, 6720)),
            ("70B TP4 H100 FP8", "70b", H100X4, (L70, "h100_sxm", "fp8", 4), (101.8, 9.78, 24.5, 640)),
            ("8B L40S FP8", "8b", L40S, (L8, "l40s", "fp8", 1), (97.0, 11.77, 31.4, 2004)),
            ("8B A100 BF16", "8b", A100_BF16, (L8, "a100_sxm", "bf16", 1), (125.3, 11.48, 30.3, 2069)),
        )
        for (label, metric, batch), value in zip(AIC_METRICS, figures, strict=True)
    ],
    # --- checks: further public engine rows (not acceptance figures) ---------------------------------
    *_tput(
        "8B TP1 H100 FP8",
        "8b",
        H100,
        [(128, 2048, 21109.38), (500, 2000, 16500.69), (2048, 128, 3556.73), (5000, 500, 3559.36)],
        None,
    ),
    *_tput(
        "8B TP1 H200 FP8",
        "8b",
        H200,
        [(128, 128, 29526.04), (1000, 1000, 17537.96), (2048, 2048, 11968.5)],
        None,
    ),
    *_tput("8B TP1 L40S FP8", "8b", L40S, [(2048, 2048, 2225.27), (2048, 128, 1066.52)], None),
    *_tput("8B TP1 A100 FP16", "8b", A100_FP16, [(2048, 2048, 2424.16), (2048, 128, 799.61)], None),
    *_tput(
        "70B TP2 H100 FP8",
        "70b",
        H100X2,
        [(128, 128, 6645.12), (1000, 1000, 4390.53), (2048, 2048, 2898.16)],
        None,
    ),
    *_tput(
        "70B TP1 H200 FP8",
        "70b",
        ["--target", "hopper", "--gpu", "H200-SXM-141GB", "--tp", "1", "--fp8"],
        [(128, 128, 4020.75), (1000, 1000, 2823.45), (2048, 2048, 1913.8)],
        None,
    ),
    *_tput(
        "70B TP4 H100 FP8",
        "70b",
        H100X4,
        [(128, 2048, 11511.93), (2048, 128, 1302.6), (5000, 500, 1602.78)],
        None,
    ),
    *_tput(
        "70B TP4 L40S FP8",
        "70b",
        ["--target", "ada", "--gpu", "L40S", "--gpus", "4", "--tp", "4", "--fp8"],
        [(128, 128, 1523.52), (1000, 1000, 1209.25), (2048, 2048, 969.68)],
        None,
    ),
    *_tput(
        "70B TP4 A100 FP16",
        "70b",
        [
            "--target",
            "ampere",
            "--gpu",
            "A100-SXM4-80GB",
            "--gpus",
            "4",
            "--tp",
            "4",
            "--qformat",
            "full_prec",
            "--dtype",
            "float16",
        ],
        [(128, 128, 2733.48), (1000, 1000, 1921.77), (2048, 2048, 1393.64)],
        None,
    ),
    *_tput(
        "Mistral-7B (Swallow-MS) H100 FP8", MS7B, H100, [(128, 128, 31674.49), (1000, 1000, 16035.66)], None
    ),
    *_tput(
        "Mixtral-8x7B (Swallow-MX) TP1 H100 FP8",
        MX,
        H100,
        [(128, 128, 15962.49), (1000, 1000, 6868.52), (2048, 2048, 3983.1)],
        None,
    ),
    *_tput(
        "Mixtral-8x7B (Swallow-MX) TP1 H200 FP8",
        MX,
        H200,
        [(128, 128, 17157.72), (1000, 1000, 10371.36), (2048, 2048, 6940.32)],
        None,
    ),
    *_tput(
        "Mixtral-8x7B (Swallow-MX) TP2 H100 FP8",
        MX,
        H100X2,
        [(128, 128, 27451.13), (1000, 1000, 15770.89), (2048, 2048, 10685.85)],
        None,
    ),
    # aiconfigurator 0.12 run here (2026-12-04, FP8 GEMM/KV/FMHA, h100_sxm/h200_sxm, 1.3.0rc20): Qwen3 shapes
    # (dense and MoE), H200, TP2. TTFT only at batch 1: at batch 64 aiconfigurator multiplies its prefill by a
    # queueing factor of 4 for requests that all arrive at once, which a closed loop does not have.
    *[
        Case(
            f"{name} {label}",
            ["--model", model, *args],
            1024,
            256,
            metric,
            value,
            AIC_RUN,
            None,
            ("--concurrency", str(batch)),
        )
        for name, model, args, figures in (
            ("Qwen3-8B H100 FP8", "qwen3-8b", H100, (37.6, 5.71, 11.71, 5380.8)),
            ("Qwen3-32B H100 FP8", "qwen3-32b", H100, (132.1, 16.51, 36.14, 1738.3)),
            ("Qwen3-30B-A3B H100 FP8", "qwen3-30b-a3b", H100, (48.5, 4.44, 17.86, 3546.3)),
        )
        for (label, metric, batch), value in zip(AIC_METRICS, figures, strict=True)
    ],
    Case(
        "8B H200 FP8 c64 TPOT",
        ["--model", "8b", *H200],
        1024,
        256,
        "tpot_ms",
        9.40,
        AIC_RUN,
        None,
        ("--concurrency", "64"),
    ),
    Case(
        "8B H200 FP8 c64 tok/s/GPU",
        ["--model", "8b", *H200],
        1024,
        256,
        "output_tokens_per_s_per_gpu",
        6691.4,
        AIC_RUN,
        None,
        ("--concurrency", "64"),
    ),
    Case(
        "70B TP2 H100 FP8 c64 TPOT",
        ["--model", "70b", *H100X2],
        1024,
        256,
        "tpot_ms",
        40.45,
        AIC_RUN,
        None,
        ("--concurrency", "64"),
    ),
    Case(
        "70B TP2 H100 FP8 c64 tok/s/GPU",
        ["--model", "70b", *H100X2],
        1024,
        256,
        "output_tokens_per_s_per_gpu",
        775.7,
        AIC_RUN,
        None,
        ("--concurrency", "64"),
    ),
    Case(
        "8B H100 BF16 467/256 at 2 req/s TTFT",
        ["--model", "8b", "--target", "hopper", "--gpu", "H100-SXM5-80GB", "--qformat", "full_prec"],
        467,
        256,
        "ttft_ms",
        23,
        SERVING,
        None,
        ("--rate", "2"),
    ),
    Case(
        "8B H100 BF16 467/256 at 2 req/s TPOT",
        ["--model", "8b", "--target", "hopper", "--gpu", "H100-SXM5-80GB", "--qformat", "full_prec"],
        467,
        256,
        "tpot_ms",
        8,
        SERVING,
        None,
        ("--rate", "2"),
    ),
    Case(
        "8B H100 BF16 467/256 at 26 req/s TPOT",
        ["--model", "8b", "--target", "hopper", "--gpu", "H100-SXM5-80GB", "--qformat", "full_prec"],
        467,
        256,
        "tpot_ms",
        19,
        SERVING,
        None,
        ("--rate", "26"),
    ),
    Case(
        "70B TP4 H100 BF16 467/256 at 2 req/s TPOT",
        ["--model", "70b", "--target", "h100x4", "--tp", "4", "--qformat", "full_prec"],
        467,
        256,
        "tpot_ms",
        21,
        SERVING,
        None,
        ("--rate", "2"),
    ),
    Case(
        "70B TP4 H100 BF16 467/256 at 12 req/s TPOT",
        ["--model", "70b", "--target", "h100x4", "--tp", "4", "--qformat", "full_prec"],
        467,
        256,
        "tpot_ms",
        66,
        SERVING,
        None,
        ("--rate", "12"),
    ),
]

SLO_ARGS = ["--model", "70b", "--target", "h100x4", "--isl", "1024", "--osl", "256", "--slo-ttft-ms", "500",
            "--slo-tpot-ms", "30"]  # fmt: skip
# aiconfigurator's best aggregated layouts for that question (issue 16): (tp, replicas, batch, tok/s/GPU).
SLO_AIC = {(4, 1): (80, 705.0), (2, 2): (40, 678.0)}


def run_plan(argv: list[str]) -> dict[str, Any]:
    from typer.testing import CliRunner

    from swallow_trt.cli.main import app

    result = CliRunner().invoke(app, ["plan", *argv, "--json"])
    if result.exit_code != 0:
        raise RuntimeError(f"plan {' '.join(argv)}: exit {result.exit_code}: {result.output.strip()}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def predict(case: Case) -> dict[str, Any]:
    argv = [*case.args, "--isl", str(case.isl), "--osl", str(case.osl), *case.extra]
    est = run_plan(argv)["estimate"]
    value = float(est[case.metric])
    ratio = value / case.anchor
    ok = None if case.tolerance is None else abs(ratio - 1) <= case.tolerance
    return {
        "case": case.name,
        "command": "swallow-trt plan " + " ".join(argv),
        "metric": case.metric,
        "predicted": round(value, 2),
        "anchor": case.anchor,
        "ratio": round(ratio, 3),
        "tolerance": case.tolerance,
        "ok": ok,
        "source": case.source,
        "max_batch_size": est["max_batch_size"],
    }


def slo_row() -> dict[str, Any]:
    data = run_plan(SLO_ARGS)
    search = data["search"]
    rec = search["recommended"]
    row: dict[str, Any] = {"command": "swallow-trt plan " + " ".join(SLO_ARGS), "recommended": rec}
    if rec is None:
        row["ok"] = False
        return row
    key = (rec["tp"], rec["replicas"])
    aic = SLO_AIC.get(key) if rec["pp"] == 1 else None
    row["aiconfigurator"] = (
        {"layout": f"TP{key[0]} x {key[1]}", "batch": aic[0], "tok_s_gpu": aic[1]} if aic else None
    )
    ratio = rec["output_tokens_per_s_per_gpu"] / aic[1] if aic else None
    row["ratio"] = round(ratio, 3) if ratio else None
    row["ok"] = bool(
        aic and rec["qformat"] == "fp8" and rec["meets_slo"] and ratio is not None and abs(ratio - 1) <= 0.30
    )
    return row


# --- aiconfigurator, in its own environment ---------------------------------------------------------

AIC_SNIPPET = r"""
import json, logging, sys, warnings
logging.disable(logging.CRITICAL)
warnings.filterwarnings("ignore")
from aiconfigurator.cli.api import cli_estimate
out = {}
for key, (model, system, quant, tp, batch, isl, osl) in json.loads(sys.stdin.read()).items():
    q = {"gemm_quant_mode": "fp8", "kvcache_quant_mode": "fp8", "fmha_quant_mode": "fp8"} if quant == "fp8" else {}
    try:
        r = cli_estimate(model, system, backend_name="trtllm", isl=isl, osl=osl, batch_size=batch, tp_size=tp, **q)
        out[key] = {"ttft_ms": float(r.ttft), "tpot_ms": float(r.tpot),
                    "output_tokens_per_s_per_gpu": float(r.raw["tokens/s/gpu"]), "version": r.backend_version}
    except Exception as e:
        out[key] = {"error": repr(e)[:200]}
print("AIC-JSON " + json.dumps(out))
"""


def aic_python() -> Path:
    py = AIC_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(AIC_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *AIC_PINS], check=True)
    return py


def aiconfigurator(cases: list[Case]) -> dict[str, dict[str, Any]]:
    jobs = {c.name: [*c.aic, c.isl, c.osl] for c in cases if c.aic}
    for (tp, replicas), (batch, _) in SLO_AIC.items():
        jobs[f"SLO TP{tp} x {replicas} batch {batch}"] = [L70, "h100_sxm", "fp8", tp, batch, 1024, 256]
    proc = subprocess.run([str(aic_python()), "-c", AIC_SNIPPET], input=json.dumps(jobs), capture_output=True,
                          text=True, check=False, env=dict(os.environ, PYTHONWARNINGS="ignore"))  # fmt: skip
    for line in proc.stdout.splitlines():
        if line.startswith("AIC-JSON "):
            found: dict[str, dict[str, Any]] = json.loads(line[len("AIC-JSON ") :])
            return found
    raise RuntimeError("aiconfigurator printed no result: " + proc.stderr.strip()[-400:])


# --- refitting the factors ---------------------------------------------------------------------------

# The factors --fit may move (path in perf_factors.json), each over the same rows at once.
FIT_PARAMS = [
    *[
        ("generations", g, k)
        for g in ("sm90", "sm89", "sm80")
        for k in ("weight_bandwidth", "kv_bandwidth", "first_token_factor")
    ],
    ("generations", "sm90", "activation_passes"),
    ("generations", "sm90", "step_overhead_s"),
    ("generations", "sm90", "sequence_overhead_s"),
    ("generations", "sm90", "context_attention_peak"),
    ("generations", "sm90", "gemm", "fp8", "peak_fraction"),
    ("generations", "sm89", "gemm", "fp8", "peak_fraction"),
    ("generations", "sm80", "gemm", "bf16", "peak_fraction"),
    ("links", "nvlink4", "bandwidth_gb_s"),
    ("links", "nvlink4", "latency_s"),
    ("links", "nvlink3", "bandwidth_gb_s"),
    ("links", "pcie4", "bandwidth_gb_s"),
]


def _loss(raw: dict[str, Any]) -> tuple[float, float]:
    """Sum of squared log ratios over every row (acceptance rows count twice, the v0.14 serving rows,
    which include Triton's overhead, a tenth) and the worst acceptance row as a fraction of its tolerance."""
    import math

    from swallow_trt.perf import factors, model

    parsed = factors.parse(raw)
    model.load_factors = lambda: parsed  # type: ignore[assignment]
    total, worst = 0.0, 0.0
    for c in CASES:
        ratio = predict(c)["ratio"]
        weight = 2.0 if c.tolerance else (0.1 if c.source == SERVING else 1.0)
        total += weight * math.log(ratio) ** 2
        if c.tolerance:
            worst = max(worst, abs(ratio - 1) / c.tolerance)
    return total, worst


def fit(rounds: int) -> dict[str, Any]:
    """Coordinate descent over FIT_PARAMS from the shipped factors; prints each accepted step and
    returns the factors (it does not write the data file: review, round and copy them by hand)."""
    import copy

    from swallow_trt.perf.factors import data_path

    raw = json.loads(data_path().read_text(encoding="utf-8"))
    best = _loss(raw)
    print(f"start: loss {best[0]:.4f}, worst acceptance row at {best[1]:.2f} of its tolerance")
    for _ in range(rounds):
        for path in FIT_PARAMS:
            node = raw
            for key in path[:-1]:
                node = node[key]
            start = node[path[-1]]
            for step in (0.85, 0.93, 1.07, 1.15):
                value = start * step
                if path[-1].endswith(("bandwidth", "fraction", "peak")):
                    value = min(value, 0.95)
                node[path[-1]] = value
                trial = _loss(raw)
                if trial[0] < best[0] - 1e-4 and trial[1] <= 1.0:
                    best, start = trial, value
                    print(
                        f"  {'.'.join(path)} = {value:.4g}: loss {best[0]:.4f}, worst {best[1]:.2f}",
                        flush=True,
                    )
            node[path[-1]] = start
    return copy.deepcopy(raw)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--aiconfigurator", action="store_true", help="also run aiconfigurator 0.12 side by side")
    ap.add_argument("--only", help="only cases whose name contains this text")
    ap.add_argument("--fit", type=int, metavar="ROUNDS", help="refit the factors over every row; print them")
    args = ap.parse_args()
    if args.fit:
        print(json.dumps(fit(args.fit), indent=1))
        return 0
    cases = [c for c in CASES if not args.only or args.only in c.name]
    rows = [predict(c) for c in cases]
    slo = slo_row() if not args.only else None
    aic = aiconfigurator(cases) if args.aiconfigurator else {}
    for row, case in zip(rows, cases, strict=True):
        live = aic.get(case.name)
        if live and case.metric in live:
            row["aiconfigurator_live"] = round(live[case.metric], 2)
            row["ratio_to_live"] = round(row["predicted"] / live[case.metric], 3)
    accepted = [r for r in rows if r["ok"] is not None]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, Python {platform.python_version()}",
        "rows": rows,
        "slo_search": slo,
        "aiconfigurator_slo_live": {k: v for k, v in aic.items() if k.startswith("SLO")},
        "acceptance": {
            "within": sum(1 for r in accepted if r["ok"]) + (1 if slo and slo["ok"] else 0),
            "of": len(accepted) + (1 if slo else 0),
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['date']}  {result['machine']}")
    live_col = bool(aic)
    head = f"{'case':<50} {'metric':<12} {'predicted':>10} {'anchor':>10} {'ratio':>6} {'tol':>5} {'ok':>4}"
    print(head + ("  aic-live  ratio" if live_col else ""))
    short = {"output_tokens_per_s": "tok/s", "output_tokens_per_s_per_gpu": "tok/s/GPU", "ttft_ms": "TTFT ms",
             "tpot_ms": "TPOT ms"}  # fmt: skip
    for r in rows:
        tol = f"{r['tolerance']:.0%}" if r["tolerance"] is not None else "check"
        ok = "" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        line = (f"{r['case']:<50} {short[r['metric']]:<12} {r['predicted']:>10,.1f} {r['anchor']:>10,.1f} "
                f"{r['ratio']:>6.2f} {tol:>5} {ok:>4}")  # fmt: skip
        if live_col and "aiconfigurator_live" in r:
            line += f"  {r['aiconfigurator_live']:>8,.1f} {r['ratio_to_live']:>6.2f}"
        print(line)
    if slo:
        rec = slo["recommended"]
        if rec is None:
            print("SLO search (70B, h100x4, 1024/256, TTFT<=500, TPOT<=30): no recommendation  NO")
        else:
            aicr = slo.get("aiconfigurator")
            print(
                f"SLO search (70B, h100x4, 1024/256, TTFT<=500, TPOT<=30): {rec['qformat']} TP{rec['tp']} PP{rec['pp']} "
                f"x {rec['replicas']} batch {rec['max_batch_size']}: {rec['output_tokens_per_s_per_gpu']:,.0f} tok/s/GPU, "
                f"TTFT {rec['ttft_ms']:.0f} ms, TPOT {rec['tpot_ms']:.1f} ms; aiconfigurator "
                + (
                    f"{aicr['layout']} batch {aicr['batch']}: {aicr['tok_s_gpu']:,.0f}, ratio {slo['ratio']:.2f}"
                    if aicr
                    else "-"
                )
                + ("  yes" if slo["ok"] else "  NO")
            )
    acc = result["acceptance"]
    print(f"acceptance rows within tolerance: {acc['within']} of {acc['of']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
