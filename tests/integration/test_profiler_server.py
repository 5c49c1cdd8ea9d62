"""The profiler against the real Triton server, checked against ground truth: a test-only ``tensorrt_llm``
model (tests/triton_models/schedule) emits tokens on a fixed schedule (first after 100 ms, then one every
10 ms), so the figures the profiler reports are known in advance.

The schedule runs from the request's arrival in the model; what a client sees adds Triton's own request
and response path, about 1.3 + 0.7 ms through the Python backend on a 2-core VM (the model reports its
send times, so the response half is measured: ``delivery_lag_ms``). That is real latency, not profiler
error, but it exceeds 3% of a 50 ms first token; at 100 ms the issue's "2 ms or 3%" leaves room for it.

- fidelity: p50 TTFT and p50 TPOT at concurrency 1, 16 and 64 within 2 ms or 3% of the schedule, output
  (and input) token counts exact;
- open loop vs closed loop: the model stalls every send for 500 ms once; the open-loop figures show
  it as the schedule predicts, the closed-loop client at the same load hides it;
- the CLI end to end (table, JSON, CSV, PNG, roofline floors), its errors, and Ctrl-C (partial files,
  exit 130, no client process left).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("transformers")

from swallow_trt.errors import EnvironmentProblem
from swallow_trt.triton_repo.configs import TrtllmModelSettings, tensorrt_llm_config, to_pbtxt
from swallow_trt.triton_repo.profiler import ProfileSpec, run_profile
from swallow_trt.triton_repo.server import TritonServer, find_tritonserver, leftover_processes
from tests.fixtures.tiny import make_tokenizer

pytestmark = pytest.mark.integration
SCHEDULE = Path(__file__).resolve().parents[1] / "triton_models" / "schedule" / "model.py"
FIRST_MS, INTERVAL_MS = 100.0, 10.0
OUTPUT = 16
STALL_MS, STALL_AT, STALL_PERIOD = 500.0, 20, 40


def _add_model(repo: Path, name: str, **params: Any) -> None:
    config = tensorrt_llm_config(
        TrtllmModelSettings(engine_dir="/unused", max_batch_size=64, backend="python"),
        name=name,
        reference_parameters={"first_token_ms": FIRST_MS, "token_interval_ms": INTERVAL_MS, **params},
    )
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(to_pbtxt(config), encoding="utf-8")
    shutil.copyfile(SCHEDULE, repo / name / "1" / "model.py")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    make_tokenizer("llama31").save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    try:
        find_tritonserver()
    except EnvironmentProblem as exc:  # pragma: no cover - the serve extra is missing
        pytest.skip(f"no runnable Triton server: {exc.one_line()}")
    root = tmp_path_factory.mktemp("profiler-repo")
    repo = root / "repo"
    _add_model(repo, "tensorrt_llm")
    # 64 streams of one token per response every 10 ms are 6,400 sends/s: more than the Python
    # backend's IPC manages on 2 cores. Four tokens per response keep TPOT at 10 ms (1,600 sends/s).
    _add_model(repo, "chunked", tokens_per_response=4)
    _add_model(repo, "stalling", stall_ms=STALL_MS, stall_at=STALL_AT, stall_period=STALL_PERIOD)
    srv = TritonServer(repo, log_path=root / "server.log")
    srv.start(timeout_s=1800)  # a failed start exits at once; the deadline only bounds a hang
    try:
        yield srv
    finally:
        srv.stop()
    assert leftover_processes(srv) == []


def _spec(server: TritonServer, tokenizer_dir: Path, out: Path, **kw: Any) -> ProfileSpec:
    base: dict[str, Any] = {
        "url": server.grpc_url,
        "model": "tensorrt_llm",
        "mode": "closed",
        "levels": (1.0,),
        "input_tokens": 512,
        "output_tokens": OUTPUT,
        "warmup": 8,
        "out": out,
        "tokenizer": tokenizer_dir,
        "plots": False,
    }
    return ProfileSpec(**(base | kw))


def _close(measured: float, truth: float) -> bool:
    return abs(measured - truth) <= max(2.0, 0.03 * truth)


@pytest.mark.parametrize(("concurrency", "model", "requests"), [(1, "tensorrt_llm", 16), (16, "tensorrt_llm", 96),
                                                               (64, "chunked", 256)])  # fmt: skip
def test_fidelity_against_the_schedule(
    server: TritonServer, tokenizer_dir: Path, tmp_path: Path, concurrency: int, model: str, requests: int
) -> None:
    # Every request takes the same 250 ms here, so streams that start together stay in lock-step and the
    # model must send 64 first tokens at the same instant (about 9 ms of serial IPC): spread the starts
    # over one request's time so the ground truth itself stays on schedule.
    latency_s = (FIRST_MS + (OUTPUT - 1) * INTERVAL_MS) / 1e3
    spec = _spec(server, tokenizer_dir, tmp_path, model=model, levels=(float(concurrency),), num_requests=requests,
                 ramp_up_s=latency_s)  # fmt: skip
    (point,) = run_profile(spec).points
    s = point.summary
    print(f"c={concurrency} TTFT p50 {s['ttft_ms']['p50']:.3f} ms, TPOT p50 {s['tpot_ms']['p50']:.3f} ms, "
          f"client {s['client']}")  # fmt: skip
    assert s["requests"] == {"sent": requests, "ok": requests, "failed": 0}
    assert _close(s["ttft_ms"]["p50"], FIRST_MS), s["ttft_ms"]
    assert _close(s["tpot_ms"]["p50"], INTERVAL_MS), s["tpot_ms"]
    # Counts are exact: from the server's sequence_length, per response.
    assert s["output_tokens_exact"]
    assert all(r.rec.tokens == OUTPUT for r in point.requests)
    assert s["input_tokens_reported"] == {"min": 512, "max": 512}
    # The client's own share: the model's send -> the profiler's callback (Triton's response path included).
    assert s["client"]["delivery_lag_ms"]["p50"] < 2.0
    assert not s["client"]["warnings"]
    chunks = [1] + [4] * 3 + [3] if model == "chunked" else [1] * OUTPUT
    assert all(r.rec.chunk_tokens == chunks for r in point.requests)


def _expected_open_ttft(point: Any) -> dict[int, float]:
    """TTFT each request should see: the stall starts when request STALL_AT reaches the model (it is the
    STALL_AT-th to arrive: arrivals are ms apart) and holds every send for STALL_MS; a first token due
    meanwhile goes out when it ends."""
    by_index = {r.rec.index: r.rec for r in point.requests}
    stall_start = by_index[STALL_AT - 1].sent_ns
    stall_end = stall_start + STALL_MS * 1e6
    out = {}
    for i, rec in by_index.items():
        due = rec.sent_ns + FIRST_MS * 1e6
        first = stall_end if stall_start <= due < stall_end else due
        out[i] = (first - rec.scheduled_ns) / 1e6
    return out


def test_open_loop_shows_a_stall_the_closed_loop_hides(
    server: TritonServer, tokenizer_dir: Path, tmp_path: Path
) -> None:
    from swallow_trt.triton_repo.perf_report import stats

    common = {"model": "stalling", "num_requests": STALL_PERIOD, "warmup": 0, "output_tokens": 8}
    # 20 req/s of 170 ms requests: about 3.4 in flight, the same load as the closed loop's 3.
    spec = _spec(server, tokenizer_dir, tmp_path / "open", mode="open", levels=(20.0,), **common)
    (open_point,) = run_profile(spec).points
    spec = _spec(server, tokenizer_dir, tmp_path / "closed", mode="closed", levels=(3.0,), **common)
    (closed_point,) = run_profile(spec).points

    o, c = open_point.summary["ttft_ms"], closed_point.summary["ttft_ms"]
    expected = stats(list(_expected_open_ttft(open_point).values()))
    delayed = sum(1 for r in open_point.requests if r.ttft_ms > FIRST_MS + 20)
    print(f"open TTFT {o}\nexpected {expected}\nclosed TTFT {c}\nopen requests delayed: {delayed}")
    assert open_point.summary["requests"]["ok"] == closed_point.summary["requests"]["ok"] == STALL_PERIOD
    # Open loop: the figures are those the schedule predicts from the scheduled send times.
    for q in ("mean", "p90", "p95", "max"):
        assert _close(o[q], expected[q]), (q, o[q], expected[q])
    assert o["p90"] > FIRST_MS + STALL_MS / 4
    # Closed loop at the same load: only the 3 requests in flight saw it (the client stopped sending
    # meanwhile); p90 looks healthy.
    assert c["max"] >= STALL_MS
    assert c["p90"] < FIRST_MS + STALL_MS / 10 < o["p90"] - STALL_MS / 10, c
    assert sum(1 for r in closed_point.requests if r.ttft_ms > FIRST_MS + 20) <= 3 < delayed


# --------------------------------------------------------------------------------------------------
# The CLI


def test_cli_profile_writes_table_json_csv_and_plots(
    server: TritonServer, tokenizer_dir: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "report"
    args = ["profile", "--url", server.grpc_url, "--model", "chunked", "--concurrency", "1,4",
            "--num-requests", "8", "--warmup", "2", "--input-tokens", "128", "--output-tokens", str(OUTPUT),
            "--tokenizer", str(tokenizer_dir), "--out", str(out), "--slo-ttft-ms", "1000", "--slo-tpot-ms", "100",
            "--plan-model", "8b", "--target", "hopper"]  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    for needle in ("concurrency 1 (closed loop)", "concurrency 4 (closed loop)", "TTFT (ms)", "TPOT (ms/token)",
                   "chunk gap (ms, vLLM 'ITL')", "goodput (TTFT <= 1000 ms, TPOT <= 100 ms)", "roofline (H100",
                   "prefill floor", "decode floor", "wrote"):  # fmt: skip
        assert needle in text, needle
    doc = json.loads((out / "profile.json").read_text(encoding="utf-8"))
    assert doc["meta"]["target_kind"] == "tensorrt_llm"
    assert doc["meta"]["interrupted"] is False
    assert doc["meta"]["input_tokens"] == 128
    assert doc["meta"]["output_length_forced"] is True
    assert [p["load"]["concurrency"] for p in doc["points"]] == [1, 4]
    for p in doc["points"]:
        assert p["goodput"]["fraction"] == 1.0
        assert p["roofline"]["decode_floor_ms"] > 0
        assert p["roofline"]["tpot_p50_over_decode_floor"] > 1
        assert len(p["requests_detail"]) == 8
        for r in p["requests_detail"]:
            assert r["output_tokens"] == OUTPUT
            assert sum(r["chunk_tokens"]) == OUTPUT
            assert (
                r["scheduled_ms"] <= r["sent_ms"] <= r["chunks_ms"][0] <= r["chunks_ms"][-1] <= r["final_ms"]
            )
    with (out / "requests.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16
    assert {r["load"] for r in rows} == {"concurrency 1", "concurrency 4"}
    assert all(int(r["output_tokens"]) == OUTPUT and r["error"] == "" for r in rows)
    for png in ("throughput_latency.png", "distributions.png"):
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) > 10_000

    result = cli(*args[:-4], "--no-plots", "--json", "--out", str(tmp_path / "json"))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [p["output_tokens_exact"] for p in data["points"]] == [True, True]
    assert not (tmp_path / "json" / "distributions.png").exists()


def test_cli_errors_against_the_server(server: TritonServer, tmp_path: Path, cli: Callable[..., Any]) -> None:
    result = cli(
        "profile", "--url", server.grpc_url, "--model", "nope", "--concurrency", "1", "--out", str(tmp_path)
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: model 'nope' is not served")
    assert "chunked" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    result = cli("profile", "--url", server.grpc_url, "--concurrency", "1", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "--tokenizer DIR" in result.stderr

    with __import__("socket").socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli("profile", "--url", f"127.0.0.1:{port}", "--concurrency", "1", "--out", str(tmp_path))
    assert result.exit_code == 3
    assert result.stderr.startswith(f"error: cannot reach Triton at 127.0.0.1:{port}")
    assert "swallow-trt serve" in result.stderr


def _successes(server: TritonServer, model: str) -> int:
    """Requests ``model`` has completed, from Triton's own counter (nv_inference_request_success)."""
    import urllib.request

    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        server.metrics_url, timeout=60
    ) as r:
        text = r.read().decode()
    prefix = f'nv_inference_request_success{{model="{model}",'
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith(prefix))


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(x) for x in (task / "children").read_text().split()}
    return found


def test_ctrl_c_saves_the_partial_run(server: TritonServer, tokenizer_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "partial"
    proc = subprocess.Popen(
        [sys.executable, "-m", "swallow_trt.cli.main", "profile", "--url", server.grpc_url, "--concurrency", "4",
         "--num-requests", "100000", "--warmup", "0", "--input-tokens", "32", "--output-tokens", "8",
         "--tokenizer", str(tokenizer_dir), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if line.startswith("concurrency 4:"):
                break
        # Interrupt after the server has finished enough requests, not after a fixed time: under load
        # two seconds may hold none of them.
        served = _successes(server, "tensorrt_llm")
        while _successes(server, "tensorrt_llm") < served + 20:
            assert proc.poll() is None, "the profile ended by itself"
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert workers, "the client processes run"
        proc.send_signal(signal.SIGINT)
        _stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "error: interrupted" in stderr
    doc = json.loads((out / "profile.json").read_text(encoding="utf-8"))
    assert doc["meta"]["interrupted"] is True
    (point,) = doc["points"]
    assert point["interrupted"] is True
    assert point["requests"]["ok"] > 10
    with (out / "requests.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sum(1 for r in rows if r["error"] == "") == point["requests"]["ok"]
    deadline = time.monotonic() + 600  # bounds a hang only: exiting workers are slow on a loaded machine
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "client processes left behind"
