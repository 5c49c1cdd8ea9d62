"""``plan --isl/--osl`` (estimate), ``--concurrency``/``--rate`` and the SLO search through the CLI (issue 16):
the JSON keys, the recommended max batch in the printed commands, the text leading with the estimate,
the bad-input lines (exit 2), and the SLO search's answer for 70B on 4x H100."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from swallow_trt.builders.estimate import pick_gpu, sequences_fit
from swallow_trt.builders.plan import PlanRequest, make_plan
from swallow_trt.cli.main import app
from tests.fixtures.cli import usage_error

ESTIMATE_KEYS = {
    "isl", "osl", "concurrency", "max_batch_size", "ttft_ms", "tpot_ms", "output_tokens_per_s",
    "output_tokens_per_s_per_gpu", "output_tokens_per_s_per_user", "requests_per_s",
}  # fmt: skip
CANDIDATE_KEYS = {
    "qformat", "kv_cache_dtype", "tp", "pp", "replicas", "concurrency", "max_batch_size", "ttft_ms", "tpot_ms",
    "output_tokens_per_s_per_gpu", "meets_slo", "commands",
}  # fmt: skip
H100 = ["--model", "8b", "--fp8", "--target", "hopper", "--gpu", "H100-SXM5-80GB"]
SLO_70B = ["--model", "70b", "--target", "h100x4", "--isl", "1024", "--osl", "256", "--slo-ttft-ms", "500",
           "--slo-tpot-ms", "30"]  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SWALLOW_TRT_DEBUG", raising=False)
    monkeypatch.setenv("SWALLOW_TRT_HOST_RAM_GIB", "1024")
    monkeypatch.setenv("SWALLOW_TRT_HOME", str(tmp_path / "home"))


def plan(*args: str) -> Result:
    return CliRunner().invoke(app, ["plan", *args])


def plan_json(*args: str) -> dict[str, Any]:
    result = plan(*args, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_estimate_keys_and_the_recommended_batch_in_the_commands() -> None:
    data = plan_json(*H100, "--isl", "1024", "--osl", "256")
    est = data["estimate"]
    assert set(est) >= ESTIMATE_KEYS
    assert est["mode"] == "max_throughput"
    assert est["floors"]["prefill_ms"] >= est["floors"]["weights_read_once_ms"]
    assert est["output_tokens_per_s"] == pytest.approx(est["output_tokens_per_s_per_gpu"])
    assert est["requests_per_s"] == pytest.approx(est["output_tokens_per_s"] / 256, rel=1e-3)
    assert 1 < est["max_batch_size"] <= est["sequences_fit"]
    assert data["max_batch_size"] == est["max_batch_size"]
    engine = data["commands"]["engine"]["argv"]
    assert engine[engine.index("--max_batch_size") + 1] == str(est["max_batch_size"])
    # a real estimate sits above the floors
    assert est["tpot_ms"] > est["floors"]["decode_step_batch1_ms"]
    assert est["ttft_ms"] > est["floors"]["prefill_ms"]


def test_concurrency_and_rate_modes() -> None:
    one = plan_json(*H100, "--isl", "1024", "--osl", "256", "--concurrency", "1")["estimate"]
    many = plan_json(*H100, "--isl", "1024", "--osl", "256", "--concurrency", "64")["estimate"]
    assert (one["mode"], one["concurrency"], one["max_batch_size"]) == ("concurrency", 1, 1)
    assert many["max_batch_size"] == 64
    assert many["tpot_ms"] > one["tpot_ms"]
    assert many["output_tokens_per_s"] > 10 * one["output_tokens_per_s"]
    assert many["output_tokens_per_s_per_user"] < one["output_tokens_per_s_per_user"]
    light = plan_json(*H100, "--isl", "1024", "--osl", "256", "--rate", "1")["estimate"]
    busy = plan_json(*H100, "--isl", "1024", "--osl", "256", "--rate", "20")["estimate"]
    assert light["mode"] == "rate"
    assert light["requests_per_s"] == pytest.approx(1)
    assert busy["output_tokens_per_s"] == pytest.approx(20 * 256)
    assert busy["ttft_ms"] > light["ttft_ms"]
    assert busy["tpot_ms"] > light["tpot_ms"]


def test_text_leads_with_the_estimate() -> None:
    result = plan(*H100, "--isl", "128", "--osl", "128")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("estimate 128/128 tokens")
    assert "floors" in result.stdout
    assert result.stdout.index("estimate") < result.stdout.index("model    ")


def test_concurrency_beyond_what_fits_says_how_many_fit() -> None:
    p = make_plan(PlanRequest(model="70b", target="h100x4", qformat="fp8", tp=4, max_seq_len=16384))
    fit = sequences_fit(p, pick_gpu(p), 8000, 8000)
    message, hint = usage_error(plan("--model", "70b", "--target", "h100x4", "--fp8", "--isl", "8000", "--osl", "8000",
                                     "--concurrency", "100000"))  # fmt: skip
    assert "holds" in message
    assert f"--concurrency {fit} or less" in hint or str(fit) in message


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--isl", "0", "--osl", "128"], "--isl must be at least 1"),
        (["--isl", "128", "--osl", "0"], "--osl must be at least 1"),
        (["--isl", "1024", "--osl", "200000"], "context"),
        (["--isl", "128", "--osl", "128", "--rate", "2", "--concurrency", "4"], "--concurrency and --rate"),
        (["--isl", "128"], "--isl and --osl go together"),
        (["--concurrency", "4"], "needs the workload"),
        (["--isl", "128", "--osl", "128", "--rate", "-1"], "--rate must be above 0"),
        (["--isl", "128", "--osl", "128", "--rate", "100000"], "more than this engine sustains"),
        (["--isl", "128", "--osl", "128", "--slo-tpot-ms", "0"], "--slo-tpot-ms must be above 0"),
        (["--isl", "128", "--osl", "128", "--slo-tpot-ms", "30", "--concurrency", "8"], "picks the batch"),
    ],
)
def test_bad_workload_is_one_line_exit_2(args: list[str], needle: str) -> None:
    message, _ = usage_error(plan(*H100, *args))
    assert needle in message


def test_valid_neighbour_of_the_bad_inputs() -> None:
    """The neighbours of the cases above are accepted (a rule that rejects everything fails here)."""
    for args in (["--isl", "1", "--osl", "1"], ["--isl", "1024", "--osl", "4096"], ["--isl", "128", "--osl", "128",
                 "--rate", "2"], ["--isl", "128", "--osl", "128", "--slo-tpot-ms", "30"]):  # fmt: skip
        result = plan(*H100, *args, "--json")
        assert result.exit_code == 0, (args, result.output)


def test_slo_search_70b_on_four_h100() -> None:
    """Issue 16's anchor: aiconfigurator's best aggregated layouts are TP4 x 1 at batch 80 (705 tok/s/GPU)
    and TP2 x 2 at batch 40 (678)."""
    search = plan_json(*SLO_70B)["search"]
    rec = search["recommended"]
    assert rec is not None, search["reason"]
    assert set(rec) >= CANDIDATE_KEYS
    assert rec["qformat"] == "fp8"
    assert (rec["tp"], rec["pp"], rec["replicas"]) in {(4, 1, 1), (2, 1, 2)}
    assert rec["meets_slo"]
    assert rec["ttft_ms"] <= 500
    assert rec["tpot_ms"] <= 30
    aic = {(4, 1): 705.0, (2, 2): 678.0}[(rec["tp"], rec["replicas"])]
    assert rec["output_tokens_per_s_per_gpu"] == pytest.approx(aic, rel=0.30)
    engine = rec["commands"]["engine"]["argv"]
    assert engine[engine.index("--max_batch_size") + 1] == str(rec["max_batch_size"])
    assert engine[engine.index("--tp_size") + 1] == str(rec["tp"]) if "--tp_size" in engine else True
    ranked = [c for c in search["candidates"] if c["meets_slo"]]
    assert [c["output_tokens_per_s_per_gpu"] for c in ranked] == sorted(
        (c["output_tokens_per_s_per_gpu"] for c in ranked), reverse=True
    )


@pytest.mark.parametrize(
    ("model", "target", "extra"),
    [
        ("70b", "ada", ["--gpus", "2"]),
        ("8b", "ampere-sm86", []),
        ("tokyotech-llm/Swallow-MX-8x7b-NVE-v0.1", "h100x4", []),
    ],
)
def test_a_layout_that_does_not_fit_is_never_a_candidate(model: str, target: str, extra: list[str]) -> None:
    search = plan_json("--model", model, "--target", target, *extra, "--isl", "2048", "--osl", "512",
                       "--slo-tpot-ms", "50")["search"]  # fmt: skip
    assert search["candidates"], search["reason"]
    for c in search["candidates"]:
        req = PlanRequest(model=model, target=target, gpus=search["gpu_count"], qformat=c["qformat"],
                          kv_cache_dtype=c["kv_cache_dtype"], tp=c["tp"], pp=c["pp"],
                          max_batch_size=c["max_batch_size"], max_input_len=2048, max_seq_len=2560)  # fmt: skip
        p = make_plan(req, suggest=False)
        g = pick_gpu(p)
        assert g.fits, c
        assert sequences_fit(p, g, 2048, 512) >= min(c["concurrency"], c["max_batch_size"]) >= 1, c
        assert c["tp"] * c["pp"] * c["replicas"] <= search["gpu_count"]


def test_an_slo_no_layout_meets_is_answered_with_the_nearest_miss() -> None:
    result = plan(*SLO_70B[:8], "--slo-ttft-ms", "1", "--slo-tpot-ms", "0.5", "--json")
    assert result.exit_code == 0, result.output
    search = json.loads(result.stdout)["search"]
    assert search["recommended"] is None
    assert "no layout meets" in search["reason"]
    miss = search["nearest_miss"]
    assert miss is not None
    assert miss["meets_slo"] is False
    text = plan(*SLO_70B[:8], "--slo-ttft-ms", "1", "--slo-tpot-ms", "0.5")
    assert text.exit_code == 0
    assert "recommended: none" in text.stdout


def test_slo_search_text_names_the_winner_and_why() -> None:
    result = plan(*SLO_70B)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("SLO search: 1024/256")
    assert "recommended: fp8" in result.stdout
    assert "why:" in result.stdout
    assert "trtllm-build" in result.stdout


def test_rate_search_sizes_replicas_for_the_rate() -> None:
    low = plan_json("--model", "8b", "--target", "h100x4", "--isl", "1024", "--osl", "256", "--rate", "1",
                    "--slo-ttft-ms", "1000", "--slo-tpot-ms", "50")["search"]["recommended"]  # fmt: skip
    high = plan_json("--model", "8b", "--target", "h100x4", "--isl", "1024", "--osl", "256", "--rate", "60",
                     "--slo-ttft-ms", "1000", "--slo-tpot-ms", "50")["search"]["recommended"]  # fmt: skip
    assert low["tp"] * low["replicas"] == 1
    assert high["tp"] * high["pp"] * high["replicas"] > 1


def test_profile_puts_the_plan_prediction_beside_the_measurement() -> None:
    """``profile --plan-model`` carries, per load point, what ``plan --isl/--osl`` predicts for the same
    ISL/OSL and load, and the measured/predicted ratios."""
    from swallow_trt.builders.estimate import Workload, estimate_plan
    from swallow_trt.profiler.perf_report import floors_vs
    from swallow_trt.profiler.run import ProfileSpec, roofline_floors

    req = PlanRequest(model="8b", target="hopper", qformat="fp8", gpu="H100-SXM5-80GB")
    spec = ProfileSpec(url="h:1", model="m", mode="closed", levels=(64.0,), input_tokens=1024, output_tokens=256,
                       plan=req)  # fmt: skip
    floors = roofline_floors(spec, 64.0)
    assert floors is not None
    _, est = estimate_plan(req, Workload(1024, 256, concurrency=64))
    pred = floors["predicted"]
    assert pred["tpot_ms"] == est.to_json()["tpot_ms"]
    assert pred["max_batch_size"] == 64
    measured = {"ttft_ms": {"p50": 2 * pred["ttft_ms"]}, "tpot_ms": {"p50": pred["tpot_ms"]},
                "output_tokens_per_s": pred["output_tokens_per_s"] / 2}  # fmt: skip
    vs = floors_vs(floors, measured)["predicted"]
    assert vs["ttft_p50_over_predicted"] == pytest.approx(2)
    assert vs["tpot_p50_over_predicted"] == pytest.approx(1)
    assert vs["output_tokens_per_s_over_predicted"] == pytest.approx(0.5)
    open_spec = ProfileSpec(url="h:1", model="m", mode="open", levels=(1e6,), input_tokens=1024, output_tokens=256,
                            plan=req)  # fmt: skip
    refused = roofline_floors(open_spec, 1e6)
    assert refused is not None
    assert "more than this engine sustains" in refused["predicted"]["error"]


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--model", "70b", "--tp", "4", "--fp8", "--target", "h100x4"],
        ["plan", *SLO_70B, "--json"],
    ],
)
def test_the_model_stays_light(args: list[str]) -> None:
    """No numpy or pandas (nor the other heavy libraries) behind the estimate and the search; a plain plan
    does not even import the performance model (start-up, benchmarks/cli_startup.py)."""
    import subprocess
    import sys

    from tests.unit.test_light_imports import HEAVY, PROBE

    heavy = (*HEAVY, "numpy", "pandas")
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=heavy, args=args)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert "Traceback" not in proc.stderr
    loaded = json.loads(
        next(x for x in proc.stderr.splitlines() if x.startswith("LOADED=")).removeprefix("LOADED=")
    )
    assert loaded == []
    own = json.loads(next(x for x in proc.stderr.splitlines() if x.startswith("OWN=")).removeprefix("OWN="))
    assert ("swallow_trt.perf.model" in own) == ("--isl" in args)


def test_slo_search_covers_the_pytorch_runtime_with_its_own_commands(tmp_path: Path) -> None:
    """GPT-OSS has no engine model: the search plans its PyTorch-runtime formats, and the winner's build
    and serve commands are ones the CLI accepts."""
    search = plan_json("--model", "tokyotech-llm/GPT-OSS-Swallow-120B-RL-v0.1-MXFP4", "--target", "h100x4",
                       "--isl", "1024", "--osl", "256", "--slo-tpot-ms", "50")["search"]  # fmt: skip
    rec = search["recommended"]
    assert rec is not None, search["reason"]
    assert rec["qformat"] == "mxfp4"
    assert set(rec["commands"]) == {"build", "serve"}
    for stage in ("build", "serve"):
        argv = [*rec["commands"][stage]["argv"][1:], "--out", str(tmp_path), "--dry-run"]
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 0, (stage, result.output)
