"""The profiler against the real Triton server, held to ground truth: a test-only ``tensorrt_llm`` model
(tests/triton_models/schedule) emits tokens on a fixed schedule (first after 100 ms, then one every
10 ms), stamps every response with its send time and records what it did (each request's arrival, every
response's due time and send stamp, each stall) in a file, on the same CLOCK_MONOTONIC as the client.

No assertion here compares a measured duration with a tolerance: CI shares its machine, and load
stretches every latency. What holds under any load is asserted instead:

- fidelity (concurrency 1, 16 and 64): the counts are exact (requests, tokens, tokens per response,
  prompt length); every response the profiler timed is the one the model sent, in order, and the
  timestamps are causal (client send <= model arrival <= model send <= client receive), so the
  profiler's TTFT is never below what the model itself took; the model never sent early; the closed
  loop never had more requests in flight than its concurrency; every figure of the summary (TTFT,
  TPOT, chunk gap, E2E, delivery lag, throughput) is what its definition gives from the raw
  per-request records in profile.json;
- open loop vs closed loop: the model stalls every send for 500 ms once per run; every request that
  the stall held shows it in the profiler's figures as the model recorded it (TTFT at least the stall
  remaining at its arrival); the open-loop client kept sending during the stall, the closed-loop client
  at the same load could not (at most its 3 requests in flight saw it);
- the CLI end to end (table, JSON, CSV, PNG, roofline floors), its errors, and Ctrl-C (partial files,
  exit 130, no client process left).

How close the figures come to the schedule on a quiet machine is a benchmark:
benchmarks/profiler_fidelity.py (quoted in BENCHMARKS.md).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
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

from swallow_trt.profiler.run import ProfileSpec, run_profile
from swallow_trt.triton_repo.server import TritonServer
from tests.fixtures.ports import free_port
from tests.fixtures.schedule_model import add_schedule_model, schedule_records
from tests.fixtures.tiny import make_tokenizer
from tests.fixtures.triton import serving

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]
FIRST_MS, INTERVAL_MS = 100.0, 10.0
OUTPUT = 16
STALL_MS, STALL_AT, STALL_PERIOD = 500.0, 20, 40
CLOSED_STALL_CONCURRENCY = 3
MS = 1_000_000


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    make_tokenizer("llama31").save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each schedule model writes its record (``<model>.jsonl``)."""
    return tmp_path_factory.mktemp("model-records")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, records: Path) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("profiler-repo")
    repo = root / "repo"

    def add(name: str, **params: Any) -> None:
        add_schedule_model(repo, name, first_token_ms=FIRST_MS, token_interval_ms=INTERVAL_MS,
                           record_path=str(records / f"{name}.jsonl"), **params)  # fmt: skip

    add("tensorrt_llm")
    # 64 streams of one token per response every 10 ms are 6,400 sends/s: more than the Python
    # backend's IPC manages on 2 cores. Four tokens per response keep TPOT at 10 ms (1,600 sends/s).
    add("chunked", tokens_per_response=4)
    add("stalling", stall_ms=STALL_MS, stall_at=STALL_AT, stall_period=STALL_PERIOD)
    # A failed start exits at once; the deadline only bounds a hang.
    with serving(repo, root / "server.log", timeout_s=1800) as srv:
        yield srv


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


def _percentiles(values: list[float]) -> dict[str, float]:
    """The summary's statistics computed independently (numpy's linear interpolation)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": len(values)} | {
        f"p{q}": float(np.percentile(v, q)) for q in (50, 90, 95, 99)
    }


def _check_figures(detail: dict[str, Any]) -> None:
    """Every figure of a point's summary as its definition gives it from the point's raw per-request
    records in profile.json (times there are rounded to 0.1 us: that, not timing, is the tolerance)."""
    ok = [d for d in detail["requests_detail"] if d["error"] is None and d["final_ms"] is not None]
    assert len(ok) == detail["requests"]["ok"] > 0
    for d in ok:  # the receive stamps are in order
        assert d["sent_ms"] <= d["chunks_ms"][0]
        assert d["chunks_ms"] == sorted(d["chunks_ms"])
        assert d["chunks_ms"][-1] <= d["final_ms"]
        assert sum(d["chunk_tokens"]) == d["output_tokens"]
        assert len(d["chunk_tokens"]) == len(d["chunks_ms"])
    recomputed = {
        "ttft_ms": [d["chunks_ms"][0] - d["scheduled_ms"] for d in ok],
        "latency_ms": [d["chunks_ms"][-1] - d["scheduled_ms"] for d in ok],
        "tpot_ms": [(d["chunks_ms"][-1] - d["chunks_ms"][0]) / (d["output_tokens"] - 1)
                    for d in ok if d["output_tokens"] > 1],
        "chunk_gap_ms": [b - a for d in ok for a, b in itertools.pairwise(d["chunks_ms"])],
    }  # fmt: skip
    figures = {key: detail[key] for key in recomputed}
    if any(d["server_send_ms"] for d in detail["requests_detail"]):
        recomputed["delivery_lag_ms"] = [
            c - s for d in detail["requests_detail"] for c, s in zip(d["chunks_ms"], d["server_send_ms"] or [], strict=False)
        ]  # fmt: skip
        figures["delivery_lag_ms"] = detail["client"]["delivery_lag_ms"]
    for key, values in recomputed.items():
        expected = _percentiles(values)
        assert figures[key] == pytest.approx(expected, abs=5e-4), key
    window_s = (
        max(d["final_ms"] for d in ok) - min(d["scheduled_ms"] for d in detail["requests_detail"])
    ) / 1e3
    assert detail["window_s"] == pytest.approx(window_s, abs=1e-6)
    assert detail["requests_per_s"] == pytest.approx(len(ok) / detail["window_s"], rel=1e-12)
    tokens = sum(d["output_tokens"] for d in ok)
    assert detail["output_tokens_per_s"] == pytest.approx(tokens / detail["window_s"], rel=1e-12)


def _points_json(out: Path) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = json.loads((out / "profile.json").read_text(encoding="utf-8"))["points"]
    return points


def _truth(point: Any, model: str, records: Path) -> list[tuple[Any, dict[str, Any]]]:
    """Each of the point's requests with the model's record of it, matched by the first send stamp the
    profiler read from the response (unique: one scheduler thread stamps every send)."""
    done, _ = schedule_records(records / f"{model}.jsonl")
    pairs = [(r, done[r.rec.server_ns[0]]) for r in point.requests]
    for r, m in pairs:
        rec = r.rec
        # Every response the profiler timed is the one the model sent, in order, with its token count.
        assert m["sent"] == rec.server_ns
        assert m["tokens"] == rec.chunk_tokens
        assert not m["dropped"]
        # Causality on the one clock: client send -> model arrival -> model send -> client receive.
        assert rec.scheduled_ns <= rec.sent_ns <= m["arrival"] <= m["sent"][0]
        assert all(t <= c for t, c in zip(m["sent"], rec.chunk_ns, strict=True))
        # The model never sent early: each response is due when its last token is, by the schedule.
        ends = list(itertools.accumulate(m["tokens"]))
        assert m["due"] == [m["arrival"] + int(FIRST_MS * MS) + (e - 1) * int(INTERVAL_MS * MS) for e in ends]
        assert all(d <= t for d, t in zip(m["due"], m["sent"], strict=True))
    return pairs


def _max_in_flight(point: Any) -> int:
    """Requests in flight at once, from the client's own send and final-response stamps."""
    events = sorted(
        [(r.rec.sent_ns, 1) for r in point.requests] + [(r.rec.final_ns, -1) for r in point.requests]
    )
    return max(itertools.accumulate(step for _, step in events))


@pytest.mark.parametrize(("concurrency", "model", "requests"), [(1, "tensorrt_llm", 16), (16, "tensorrt_llm", 96),
                                                               (64, "chunked", 256)])  # fmt: skip
def test_fidelity_against_the_schedule(
    server: TritonServer, tokenizer_dir: Path, tmp_path: Path, records: Path, concurrency: int, model: str,
    requests: int,
) -> None:  # fmt: skip
    # Every request takes the same 250 ms here, so streams that start together stay in lock-step and the
    # model must send 64 first tokens at the same instant: spread the starts over one request's time.
    latency_s = (FIRST_MS + (OUTPUT - 1) * INTERVAL_MS) / 1e3
    spec = _spec(server, tokenizer_dir, tmp_path, model=model, levels=(float(concurrency),), num_requests=requests,
                 ramp_up_s=latency_s)  # fmt: skip
    (point,) = run_profile(spec).points
    s = point.summary
    print(f"c={concurrency} TTFT p50 {s['ttft_ms']['p50']:.3f} ms, TPOT p50 {s['tpot_ms']['p50']:.3f} ms, "
          f"client {s['client']} (figures: benchmarks/profiler_fidelity.py)")  # fmt: skip
    # Counts are exact: from the server's sequence_length, per response.
    assert s["requests"] == {"sent": requests, "ok": requests, "failed": 0}
    assert s["output_tokens_exact"]
    assert all(r.rec.tokens == OUTPUT for r in point.requests)
    assert s["input_tokens_reported"] == {"min": 512, "max": 512}
    chunks = [1] + [4] * 3 + [3] if model == "chunked" else [1] * OUTPUT
    assert all(r.rec.chunk_tokens == chunks for r in point.requests)

    for r, m in _truth(point, model, records):
        assert m["inputs"] == 512
        # Closed loop: TTFT counts from the actual send, so it holds the model's own first-token time
        # (what the schedule made it take) plus the request and response paths, never less.
        assert r.rec.scheduled_ns == r.rec.sent_ns
        assert r.ttft_ms >= (m["sent"][0] - m["arrival"]) / MS >= FIRST_MS
    assert _max_in_flight(point) <= concurrency
    (detail,) = _points_json(tmp_path)
    _check_figures(detail)
    assert detail["client"]["delivery_lag_ms"]["min"] >= 0


def _stall_effect(
    point: Any, pairs: list[tuple[Any, dict[str, Any]]], stall: dict[str, Any]
) -> dict[str, int]:
    """What the stall did to a run, by the model's record, and that the profiler shows all of it."""
    held = sent_during = 0
    for r, m in pairs:
        rec = r.rec
        # The model's promise: no send is stamped from the moment a stall is set to its end.
        assert not any(stall["set"] <= t < stall["until"] for t in m["sent"])
        waited = [stall["set"] <= t and d < stall["until"] for d, t in zip(m["due"], m["sent"], strict=True)]
        held += any(waited)
        if any(waited):  # the profiler received those responses after the stall, as the model sent them
            first = waited.index(True)
            assert all(c >= stall["until"] for c in rec.chunk_ns[first:])
            assert r.latency_ms >= (stall["until"] - rec.scheduled_ns) / MS
        if stall["set"] <= m["arrival"] < stall["until"]:
            # Arrived during the stall: its TTFT holds at least the stall remaining at its arrival.
            assert r.ttft_ms >= (stall["until"] - m["arrival"]) / MS
        if stall["set"] <= rec.sent_ns < stall["until"]:  # so it reached the model during the stall too
            assert rec.chunk_ns[0] >= stall["until"]
            sent_during += 1
    trigger = next(r for r, m in pairs if m["received"] == stall["received"])
    assert trigger.ttft_ms >= STALL_MS  # it arrived as the stall began
    return {"held": held, "sent_during": sent_during}


def test_open_loop_shows_a_stall_the_closed_loop_hides(
    server: TritonServer, tokenizer_dir: Path, tmp_path: Path, records: Path
) -> None:
    common = {"model": "stalling", "num_requests": STALL_PERIOD, "warmup": 0, "output_tokens": 8}
    # 20 req/s of 170 ms requests: about 3.4 in flight, the same load as the closed loop's 3. The model
    # stalls on its 20th request of each run (40 a run, so the 20th and the 60th).
    spec = _spec(server, tokenizer_dir, tmp_path / "open", mode="open", levels=(20.0,), **common)
    (open_point,) = run_profile(spec).points
    spec = _spec(server, tokenizer_dir, tmp_path / "closed", mode="closed",
                 levels=(float(CLOSED_STALL_CONCURRENCY),), **common)  # fmt: skip
    (closed_point,) = run_profile(spec).points

    _, stalls = schedule_records(records / "stalling.jsonl")
    assert [x["received"] for x in stalls] == [STALL_AT, STALL_PERIOD + STALL_AT]
    assert all(x["until"] - x["arrival"] == int(STALL_MS * MS) for x in stalls)
    effects = {}
    for name, point, stall in (("open", open_point, stalls[0]), ("closed", closed_point, stalls[1])):
        assert point.summary["requests"] == {"sent": STALL_PERIOD, "ok": STALL_PERIOD, "failed": 0}
        pairs = _truth(point, "stalling", records)
        effects[name] = _stall_effect(point, pairs, stall)
        (detail,) = _points_json(tmp_path / name)
        _check_figures(detail)
        # The profiler's TTFTs dominate the model's own first-token times (counted from the same
        # starts), request by request, so every statistic does too.
        floors = _percentiles([(m["sent"][0] - r.rec.scheduled_ns) / MS for r, m in pairs])
        for q in ("mean", "p50", "p90", "p95", "p99", "max"):
            assert point.summary["ttft_ms"][q] >= floors[q], (name, q)
        assert point.summary["ttft_ms"]["max"] >= STALL_MS
    print(f"stall effects {effects}\nopen TTFT {open_point.summary['ttft_ms']}\n"
          f"closed TTFT {closed_point.summary['ttft_ms']}")  # fmt: skip
    # Closed loop: the client sends only when a request ends and none ends during a stall, so only the
    # requests in flight saw it (responses already stamped may still end a few, whose successors the
    # stall then holds: still never more than the concurrency at once).
    assert effects["closed"]["held"] <= CLOSED_STALL_CONCURRENCY
    assert effects["closed"]["sent_during"] <= CLOSED_STALL_CONCURRENCY
    # Open loop: the client does not wait for responses; its Poisson schedule put about ten sends in the
    # 500 ms, and each of them carries the stall (asserted above).
    assert effects["open"]["sent_during"] > CLOSED_STALL_CONCURRENCY
    assert effects["open"]["held"] > CLOSED_STALL_CONCURRENCY


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

    port = free_port()  # a port nobody listens on
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
